"""The in-memory view, without I/O: what reaches the pending writes."""

from __future__ import annotations

import datetime as dt
import uuid

from healthmgr.manager.view import Applied, Arrival, View
from healthmgr.topology import (
    AmphoraTopology,
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
)
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
)

AMP, LB, LST, POOL, M1, M2 = (uuid.uuid4().bytes for _ in range(6))


def topology(member_status: str = "ONLINE") -> AmphoraTopology:
    members = (
        MemberTopology(M1, POOL, True, "ONLINE"),
        MemberTopology(M2, POOL, True, member_status),
    )
    lb = LoadBalancerTopology(
        LB, True, "ACTIVE", "ONLINE",
        (ListenerTopology(LST, True, "ONLINE", POOL),),
        (PoolTopology(POOL, True, "ONLINE", members),),
    )
    return AmphoraTopology(AMP, "ALLOCATED", "STANDALONE", lb)


def heartbeat(seq: int, m2: MemberState = MemberState.UP) -> Heartbeat:
    return Heartbeat(
        AMP, seq, 1_000 + seq, 10_000, 1,
        (ListenerReport(LST, ListenerState.OPEN, 0, seq, seq, seq, 0),),
        (PoolReport(POOL, LST, PoolState.UP,
                    (MemberReport(M1, MemberState.UP), MemberReport(M2, m2))),),
    )


def loaded_view() -> View:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    view.install([AMP], {AMP: topology()}, now=0.0)
    return view


def statuses(view: View) -> dict[tuple[str, bytes], str]:
    batch, _ = view.pending.take()
    return {(w.table, w.id): w.operating_status for w in batch.statuses}


def test_unknown_amphora_waits_for_its_topology_then_applies() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    assert view.apply(Arrival(heartbeat(1), 0.0, 2_000), 0.0) is Applied.QUEUED
    assert view.wanted(10) == [AMP]
    released = view.install([AMP], {AMP: topology()}, now=0.1)
    assert [a.heartbeat.seq for a in released] == [1]
    assert view.apply(released[0], 0.1) is Applied.ACCEPTED


def test_amphora_missing_from_the_database_is_unknown() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    view.install([AMP], {}, now=0.0)
    assert view.apply(Arrival(heartbeat(1), 0.0, 2_000), 0.0) is Applied.UNKNOWN_AMPHORA
    assert len(view.pending) == 0


def test_member_down_is_written_once_and_repeats_write_nothing() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(1, MemberState.DOWN), 0.0, 2_000), 0.0)
    assert statuses(view) == {
        ("member", M2): "ERROR", ("pool", POOL): "DEGRADED", ("load_balancer", LB): "DEGRADED"
    }
    view.apply(Arrival(heartbeat(2, MemberState.DOWN), 0.0, 2_000), 0.0)
    assert statuses(view) == {}


def test_a_reordered_older_heartbeat_does_not_revert_statuses() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(5, MemberState.DOWN), 0.0, 2_000, newest=True), 0.0)
    statuses(view)
    late = Arrival(heartbeat(4, MemberState.UP), 0.0, 2_000, newest=False)
    assert view.apply(late, 0.0) is Applied.ACCEPTED  # still proof of life
    assert statuses(view) == {}


def test_topology_change_is_seen_even_when_the_report_repeats() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(1), 0.0, 2_000), 0.0)
    statuses(view)
    # The database says member 2 went ERROR (another manager wrote it): the
    # same all-UP report must now bring it back ONLINE.
    view.install([AMP], {AMP: topology(member_status="ERROR")}, now=1.0)
    view.apply(Arrival(heartbeat(2), 1.0, 3_000), 1.0)
    assert statuses(view)[("member", M2)] == "ONLINE"


def test_heartbeat_processed_too_late_does_not_refresh_health() -> None:
    view = loaded_view()
    assert view.apply(Arrival(heartbeat(1), 0.0, 2_000), 11.0) is Applied.LATE
    batch, _ = view.pending.take()
    assert batch.health == ()


def test_health_bump_is_bounded_by_the_send_time() -> None:
    view = loaded_view()
    hb = heartbeat(1)  # sent_at_ms = 1_001, arrives "later" at 9_000
    view.apply(Arrival(hb, 0.0, 9_000), 0.0)
    batch, _ = view.pending.take()
    (bump,) = batch.health
    assert bump.last_update == dt.datetime(1970, 1, 1, 0, 0, 1, 1000)


def test_a_failed_flush_merged_back_loses_nothing_and_keeps_newer_values() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(1, MemberState.DOWN), 0.0, 2_000), 0.0)
    batch, arrivals = view.pending.take()
    view.apply(Arrival(heartbeat(2, MemberState.UP), 0.0, 3_000), 0.0)  # newer, not yet flushed
    view.pending.merge_back(batch, arrivals)
    merged, _ = view.pending.take()
    assert {b.last_update for b in merged.health} == {dt.datetime(1970, 1, 1, 0, 0, 1, 2000)}
    written = {(w.table, w.id): w.operating_status for w in merged.statuses}
    assert written[("member", M2)] == "ONLINE"
    assert [s.seq for s in merged.stats] == [2]


def test_evicted_topology_is_not_needed_while_reports_repeat_and_reloaded_on_change() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(1), 0.0, 2_000), 0.0)
    statuses(view)
    view.max_cached_lbs = 0  # evict everything on the next insert
    other = uuid.uuid4().bytes
    view.install([other], {}, now=0.0)  # an unrelated install
    view._lbs.clear()
    # Same report: decided from the hashes alone, no topology needed.
    assert view.apply(Arrival(heartbeat(2), 0.0, 2_000), 0.0) is Applied.ACCEPTED
    # A changed report needs the topology: the heartbeat waits for a load.
    assert view.apply(Arrival(heartbeat(3, MemberState.DOWN), 0.0, 2_000), 0.0) is Applied.QUEUED
    assert AMP in view.wanted(10)
    view.max_cached_lbs = 10
    (released,) = view.install([AMP], {AMP: topology()}, now=0.5)
    assert view.apply(released, 0.5) is Applied.ACCEPTED
    assert statuses(view)[("member", M2)] == "ERROR"


def test_health_update_resolution_skips_bumps_within_it() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10, health_resolution=20.0)
    view.install([AMP], {AMP: topology()}, now=0.0)
    sent = []
    for seq, at_ms in ((1, 100_000), (2, 110_000), (3, 120_000), (4, 130_000), (5, 140_000)):
        hb = heartbeat(seq)
        hb = Heartbeat(hb.amphora_id, seq, at_ms, *(getattr(hb, f) for f in
                       ("interval_ms", "counters_epoch", "listeners", "pools")))
        view.apply(Arrival(hb, 0.0, at_ms + 5), 0.0)
        batch, _ = view.pending.take()
        sent += [b.last_update for b in batch.health]
    # Written at 100 s, then first at or beyond 120 s, then 140 s: never more than 20 s behind.
    assert [d.second for d in sent] == [40, 0, 20]


def test_stats_update_every_keeps_every_kth_heartbeat_only() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10, stats_every=3)
    view.install([AMP], {AMP: topology()}, now=0.0)
    seqs = []
    for seq in range(1, 8):
        view.apply(Arrival(heartbeat(seq), 0.0, 2_000), 0.0)
        batch, _ = view.pending.take()
        seqs += [s.seq for s in batch.stats]
    assert seqs == [3, 6]


def test_waiting_heartbeats_beyond_the_bound_are_counted_superseded() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    for seq in range(1, 7):
        assert view.apply(Arrival(heartbeat(seq), 0.0, 2_000), 0.0) is Applied.QUEUED
    assert view.superseded == 2
    released = view.install([AMP], {AMP: topology()}, now=0.1)
    assert [a.heartbeat.seq for a in released] == [3, 4, 5, 6]

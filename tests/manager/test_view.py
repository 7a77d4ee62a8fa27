"""The in-memory view, without I/O: what reaches the pending writes."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import uuid

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from healthmgr.manager.view import Applied, Arrival, View
from healthmgr.rules.batch import (
    STATUS_TABLES,
    ReportWrite,
    StatusWrite,
    pack_statuses,
    unpack_statuses,
)
from healthmgr.rules.constants import OPERATING_STATUSES
from healthmgr.rules.topology import (
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
    WireFormat,
)

AMP, LB, LST, POOL, M1, M2 = (uuid.uuid4().bytes for _ in range(6))


def topology(member_status: str = "ONLINE") -> AmphoraTopology:
    members = (
        MemberTopology(M1, POOL, True, "ONLINE"),
        MemberTopology(M2, POOL, True, member_status),
    )
    lb = LoadBalancerTopology(
        LB,
        True,
        "ACTIVE",
        "ONLINE",
        (ListenerTopology(LST, True, "ONLINE", POOL),),
        (PoolTopology(POOL, True, "ONLINE", members),),
    )
    return AmphoraTopology(AMP, "ALLOCATED", "STANDALONE", lb)


def heartbeat(seq: int, m2: MemberState = MemberState.UP) -> Heartbeat:
    return Heartbeat(
        AMP,
        seq,
        1_000 + seq,
        10_000,
        1,
        (ListenerReport(LST, ListenerState.OPEN, 0, seq, seq, seq, 0),),
        (
            PoolReport(
                POOL, LST, PoolState.UP, (MemberReport(M1, MemberState.UP), MemberReport(M2, m2))
            ),
        ),
    )


def loaded_view() -> View:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    view.install([AMP], {AMP: topology()}, now=0.0)
    return view


def reports(view: View) -> list[ReportWrite]:
    batch, _ = view.pending.take()
    return list(batch.reports)


def statuses(view: View) -> dict[tuple[str, bytes], str]:
    """What the amphora's newest report determined (empty: no report pending)."""
    found = reports(view)
    if not found:
        return {}
    (report,) = found
    return {(w.table, w.id): w.operating_status for w in unpack_statuses(report.statuses)}


def changes(view: View) -> dict[tuple[str, bytes], str]:
    """The determined statuses, only when the report differs from the cache."""
    found = reports(view)
    if not found or not found[0].cache_differs:
        return {}
    (report,) = found
    return {(w.table, w.id): w.operating_status for w in unpack_statuses(report.statuses)}


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


def test_member_down_is_determined_and_repeats_carry_the_same_digest() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(1, MemberState.DOWN), 0.0, 2_000), 0.0)
    (first,) = reports(view)
    determined = {(w.table, w.id): w.operating_status for w in unpack_statuses(first.statuses)}
    assert determined == {
        ("load_balancer", LB): "DEGRADED",
        ("listener", LST): "ONLINE",
        ("pool", POOL): "DEGRADED",
        ("member", M1): "ONLINE",
        ("member", M2): "ERROR",
    }
    assert first.cache_differs  # the cache said ONLINE
    assert (first.order, first.healthy, first.native) == (1, True, True)
    view.apply(Arrival(heartbeat(2, MemberState.DOWN), 0.0, 2_000), 0.0)
    (second,) = reports(view)
    # The store writes statuses only when the digest differs from the newest
    # report in the database (or the cache differs): the steady state writes none.
    assert (second.order, second.digest, second.cache_differs) == (2, first.digest, False)


def test_a_reordered_older_heartbeat_writes_no_report() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(5, MemberState.DOWN), 0.0, 2_000, newest=True), 0.0)
    reports(view)
    late = Arrival(heartbeat(4, MemberState.UP), 0.0, 2_000, newest=False)
    assert view.apply(late, 0.0) is Applied.ACCEPTED  # still proof of life
    assert reports(view) == []


def test_topology_change_is_seen_even_when_the_report_repeats() -> None:
    view = loaded_view()
    view.apply(Arrival(heartbeat(1), 0.0, 2_000), 0.0)
    reports(view)
    # The database says member 2 went ERROR (the cache was re-read): the same
    # all-UP report must now bring it back ONLINE, whatever digest the database holds.
    view.install([AMP], {AMP: topology(member_status="ERROR")}, now=1.0)
    view.apply(Arrival(heartbeat(2), 1.0, 3_000), 1.0)
    assert changes(view)[("member", M2)] == "ONLINE"


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
    (report,) = merged.reports
    written = {(w.table, w.id): w.operating_status for w in unpack_statuses(report.statuses)}
    assert written[("member", M2)] == "ONLINE"
    assert report.cache_differs  # seq 1 changed the cache and was never written
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
        hb = Heartbeat(
            hb.amphora_id,
            seq,
            at_ms,
            *(getattr(hb, f) for f in ("interval_ms", "counters_epoch", "listeners", "pools")),
        )
        view.apply(Arrival(hb, 0.0, at_ms + 5), 0.0)
        batch, _ = view.pending.take()
        sent += [b.last_update for b in batch.health]
    # Written at 100 s, then first at or beyond 120 s, then 140 s: never more than 20 s behind.
    assert [d.second for d in sent] == [40, 0, 20]


def test_stats_update_every_keeps_one_heartbeat_in_k_intervals_by_time() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10, stats_every=3)
    view.install([AMP], {AMP: topology()}, now=0.0)
    seqs = []
    for seq in range(1, 8):  # one heartbeat per 10 s interval
        view.apply(Arrival(heartbeat(seq), 0.0, 2_000 + seq * 10_000), 0.0)
        batch, _ = view.pending.take()
        seqs += [s.seq for s in batch.stats]
    assert seqs == [1, 4, 7]


def test_stats_update_every_applies_to_octavia_heartbeats_too() -> None:
    """An Octavia v1/v2 heartbeat (absolute counters) has no interval_ms (0): the
    configured heartbeat_interval stands in, so k still thins the writes."""
    view = View(ttl=300, refresh_min_interval=5, late_after=10, stats_every=3)
    view.install([AMP], {AMP: topology()}, now=0.0)
    seqs = []
    for seq in range(1, 8):  # one heartbeat per 10 s interval
        octavia = msgspec.structs.replace(heartbeat(seq), interval_ms=0)
        view.apply(Arrival(octavia, 0.0, 2_000 + seq * 10_000), 0.0)
        batch, _ = view.pending.take()
        seqs += [s.seq for s in batch.stats]
    assert seqs == [1, 4, 7]


def test_stats_update_every_with_round_robin_managers_never_starves() -> None:
    """Heartbeat i goes to manager i mod 2: with k = 2 a rule on the sequence
    number could keep no statistics at all in one of the managers."""
    managers = [
        View(ttl=300, refresh_min_interval=5, late_after=10, stats_every=2) for _ in range(2)
    ]
    for view in managers:
        view.install([AMP], {AMP: topology()}, now=0.0)
    kept: list[list[int]] = [[], []]
    for seq in range(1, 13):
        view = managers[seq % 2]
        view.apply(Arrival(heartbeat(seq), 0.0, seq * 10_000), 0.0)
        batch, _ = view.pending.take()
        kept[seq % 2] += [s.seq for s in batch.stats]
    assert kept[0] and kept[1]
    assert all(b - a <= 4 for part in kept for a, b in itertools.pairwise(part))


def test_waiting_heartbeats_beyond_the_bound_are_counted_superseded() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    for seq in range(1, 7):
        assert view.apply(Arrival(heartbeat(seq), 0.0, 2_000), 0.0) is Applied.QUEUED
    assert view.superseded == 2
    released = view.install([AMP], {AMP: topology()}, now=0.1)
    assert [a.heartbeat.seq for a in released] == [3, 4, 5, 6]


def test_late_heartbeat_writes_no_status_and_no_health_but_keeps_its_counters() -> None:
    """As Octavia: processed heartbeat_interval or more after arrival, it is ignored."""
    view = loaded_view()
    arrival = Arrival(heartbeat(1, MemberState.DOWN), 0.0, 2_000)
    assert view.apply(arrival, 10.0) is Applied.LATE
    batch, _ = view.pending.take()
    assert (batch.health, batch.reports) == ((), ())
    assert [s.seq for s in batch.stats] == [1]
    (event,) = view.drain_events()
    assert (event.kind, event.amphora_id, event.detail) == ("late", AMP, {"delay": 10.0})


def test_amphora_of_a_deleted_load_balancer_is_not_healthy_in_the_daemon_path() -> None:
    """R27: the loader keeps a DELETED load balancer (without objects) so that the
    view does not mistake its amphora for a spare one."""
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    deleted = LoadBalancerTopology(LB, True, "DELETED", "ONLINE", (), ())
    view.install([AMP], {AMP: AmphoraTopology(AMP, "ALLOCATED", "STANDALONE", deleted)}, 0.0)
    spare_like = Heartbeat(AMP, 1, 1_001, 10_000, 1, (), ())  # reports no listeners
    assert view.apply(Arrival(spare_like, 0.0, 2_000), 0.0) is Applied.UNHEALTHY
    batch, _ = view.pending.take()
    assert batch.health == ()
    (report,) = batch.reports
    assert (unpack_statuses(report.statuses), report.healthy) == ((), False)
    # Its own verdict, not a listener-count mismatch (0 of 0 is no mismatch).
    (event,) = view.drain_events()
    assert (event.kind, event.detail) == ("deleted_load_balancer", {"reported": 0})


def test_spare_amphora_reporting_no_listeners_is_healthy() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    view.install([AMP], {AMP: AmphoraTopology(AMP, "READY", None, None)}, 0.0)
    spare = Heartbeat(AMP, 1, 1_001, 10_000, 1, (), ())
    assert view.apply(Arrival(spare, 0.0, 2_000), 0.0) is Applied.ACCEPTED


def test_listener_count_mismatch_is_an_event_with_the_counts() -> None:
    view = loaded_view()
    hb = heartbeat(1)
    silent = Heartbeat(hb.amphora_id, 1, hb.sent_at_ms, hb.interval_ms, 1, (), ())
    assert view.apply(Arrival(silent, 0.0, 2_000), 0.0) is Applied.UNHEALTHY
    (event,) = view.drain_events()
    assert (event.kind, event.lb_id, event.detail) == (
        "listener_count_mismatch",
        LB,
        {"reported": 0, "expected": 1},
    )


@given(
    st.lists(
        st.tuples(
            st.sampled_from(STATUS_TABLES),
            st.binary(min_size=15, max_size=17),
            st.sampled_from((*OPERATING_STATUSES, "NOT_A_STATUS")),
        ),
        max_size=8,
    )
)
# Every run: ids that pack, and a status without a code (the tuple is kept).
@example([("member", bytes(16), "ONLINE"), ("pool", bytes(range(16)), "NOT_A_STATUS")])
def test_packed_statuses_unpack_to_the_same_writes(items: list[tuple[str, bytes, str]]) -> None:
    """The view keeps each amphora's statuses packed (18 bytes each); what does not
    pack (an id not 16 bytes, a status without a code) is kept as it is."""
    writes = tuple(StatusWrite(*item) for item in items)
    packed = pack_statuses(writes)
    assert unpack_statuses(packed) == writes
    if all(len(w.id) == 16 and w.operating_status in OPERATING_STATUSES for w in writes):
        assert type(packed) is bytes and len(packed) == 18 * len(writes)


def test_a_burst_of_waiting_amphorae_leaves_no_peak_sized_tables() -> None:
    """After a fleet's first contact the emptied waiting dict and wanted set
    are fresh ones: an emptied dict or set keeps its peak's table (memory)."""
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    empty_dict, empty_set = sys.getsizeof({}), sys.getsizeof(set())
    ids = [uuid.uuid4().bytes for _ in range(5_000)]
    for amp in ids:
        hb = msgspec.structs.replace(heartbeat(1), amphora_id=amp)
        assert view.apply(Arrival(hb, 0.0, 2_000), 0.0) is Applied.QUEUED
    wanted = view.wanted(3_000)
    assert sys.getsizeof(view._wanted) > empty_set  # still 2,000 wanted
    wanted += view.wanted(3_000)
    assert sorted(wanted) == sorted(ids)
    assert sys.getsizeof(view._wanted) == empty_set
    released = view.install(wanted[:2_500], {}, now=0.1)
    assert len(released) == 2_500 and sys.getsizeof(view._waiting) > empty_dict
    released = view.install(wanted[2_500:], {}, now=0.1)
    assert len(released) == 2_500 and sys.getsizeof(view._waiting) == empty_dict
    assert view.apply(Arrival(heartbeat(2), 0.0, 2_000), 0.0) is Applied.QUEUED  # still works
    assert view.wanted(10) == [AMP]


def test_a_waiting_heartbeat_is_held_packed_and_released_unchanged() -> None:
    """While its topology loads a native heartbeat is held as one bytes object
    (memory at a fleet's first contact); what is released equals what came."""
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    hbs = [heartbeat(1), heartbeat(2, MemberState.DOWN)]
    for i, hb in enumerate(hbs):
        arrival = Arrival(hb, 0.5 + i, 2_000 + i, newest=True, source=("10.0.0.1", 5555))
        assert view.apply(arrival, 0.5 + i) is Applied.QUEUED
    held = view._waiting[AMP]
    assert type(held) is list and all(type(w) is bytes for w in held)
    released = view.install([AMP], {AMP: topology()}, now=3.0)
    assert [a.heartbeat for a in released] == hbs
    assert [(a.mono, a.wall_ms, a.newest, a.source) for a in released] == [
        (0.5 + i, 2_000 + i, True, ("10.0.0.1", 5555)) for i in range(2)
    ]
    assert [view.apply(a, 3.0) for a in released] == [Applied.ACCEPTED, Applied.ACCEPTED]


def test_a_waiting_octavia_heartbeat_is_held_as_it_came() -> None:
    """Octavia's heartbeats are not bound by the native format's limits, which
    unpacking would check: they wait decoded."""
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    hb = msgspec.structs.replace(heartbeat(1), format=WireFormat.OCTAVIA, interval_ms=0)
    assert view.apply(Arrival(hb, 0.0, 2_000), 0.0) is Applied.QUEUED
    assert view._waiting[AMP].heartbeat is hb  # one alone: no list
    (released,) = view.install([AMP], {AMP: topology()}, now=0.1)
    assert released.heartbeat is hb


def test_a_waiting_heartbeat_from_a_source_that_is_not_an_address_keeps_it() -> None:
    view = View(ttl=300, refresh_min_interval=5, late_after=10)
    source = object()
    assert view.apply(Arrival(heartbeat(1), 0.0, 2_000, source=source), 0.0) is Applied.QUEUED
    assert view.apply(Arrival(heartbeat(2), 0.0, 2_000), 0.0) is Applied.QUEUED
    first, second = view.install([AMP], {AMP: topology()}, now=0.1)
    assert (first.source, first.heartbeat.seq) == (source, 1)
    assert (second.source, second.heartbeat.seq) == (None, 2)

"""HAProxy stats -> heartbeat value (pure)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agent import haproxy, report
from agent.haproxy import Info
from healthmgr.wire.ids import id_bytes
from healthmgr.wire.values import ListenerState, MemberState, PoolState

CAPTURED = (Path(__file__).parent / "data" / "show_info_stat.txt").read_text()
LISTENER = "11111111-1111-1111-1111-111111111111"
POOL = "22222222-2222-2222-2222-222222222222"
AMPHORA = uuid.UUID("99999999-9999-9999-9999-999999999999").bytes


def _heartbeat(text: str = CAPTURED):
    snap = haproxy.parse_snapshot(text)
    return report.build_heartbeat(
        snap, amphora_id=AMPHORA, seq=7, sent_at_ms=1_000, interval_ms=10_000, counters_epoch=5
    )


def test_captured_stats_to_heartbeat() -> None:
    hb = _heartbeat()
    assert (hb.amphora_id, hb.seq, hb.sent_at_ms, hb.interval_ms, hb.counters_epoch) == (
        AMPHORA,
        7,
        1_000,
        10_000,
        5,
    )
    # The "stats" frontend is not a listener: only UUID-named proxies are reported.
    assert len(hb.listeners) == 1
    (listener,) = hb.listeners
    assert listener.id == id_bytes(LISTENER)
    assert listener.status is ListenerState.OPEN
    assert (
        listener.current_connections,
        listener.bytes_in,
        listener.bytes_out,
        listener.total_connections,
        listener.request_errors,
    ) == (2, 4321, 98765, 17, 1)
    (pool,) = hb.pools
    assert (pool.id, pool.listener_id, pool.status) == (
        id_bytes(POOL),
        id_bytes(LISTENER),
        PoolState.UP,
    )
    assert [(m.id, m.status) for m in pool.members] == [
        (id_bytes("33333333-3333-3333-3333-333333333333"), MemberState.UP),
        (id_bytes("44444444-4444-4444-4444-444444444444"), MemberState.DOWN),  # "DOWN 1/2"
        (id_bytes("55555555-5555-5555-5555-555555555555"), MemberState.NO_CHECK),
        (id_bytes("66666666-6666-6666-6666-666666666666"), MemberState.DRAIN),  # UP, weight 0
    ]


HEADER = "# pxname,svname,scur,stot,bin,bout,ereq,status,weight,type\n"


def test_foreign_names_are_skipped() -> None:
    lid, pid, mid = (str(uuid.uuid4()) for _ in range(3))
    text = (
        "Pid: 1\n\n"
        + HEADER
        + "\n".join(
            [
                f"{lid},FRONTEND,0,0,0,0,0,FULL,,0",
                f"{{{lid}}},FRONTEND,0,0,0,0,0,OPEN,,0",  # braced: not canonical
                f"{pid}:{lid},web-x,0,0,0,0,0,UP,1,2",  # server not named by a UUID
                f"{pid}:{lid},{mid},0,0,0,0,0,MAINT,1,2",
                f"{pid}:{lid},BACKEND,0,0,0,0,0,DOWN,0,1",
                f"{pid},{mid},0,0,0,0,0,UP,1,2",
                f"{pid},BACKEND,0,0,0,0,0,UP,1,1",  # backend not named pool:listener
                f"static:{lid},BACKEND,0,0,0,0,0,UP,1,1",
            ]
        )
    )
    hb = _heartbeat(text)
    assert [(x.id, x.status) for x in hb.listeners] == [(id_bytes(lid), ListenerState.FULL)]
    (pool,) = hb.pools
    assert pool.status is PoolState.DOWN
    assert [(m.id, m.status) for m in pool.members] == [(id_bytes(mid), MemberState.MAINT)]


def test_pool_without_members_and_unknown_statuses() -> None:
    lid, pid = str(uuid.uuid4()), str(uuid.uuid4())
    text = (
        "Pid: 1\n\n"
        + HEADER
        + f"{lid},FRONTEND,0,0,0,0,0,PAUSED,,0\n{pid}:{lid},BACKEND,0,0,0,0,0,MAYBE,0,1\n"
    )
    hb = _heartbeat(text)
    assert hb.listeners[0].status is ListenerState.OTHER
    assert hb.pools[0].status is PoolState.OTHER
    assert hb.pools[0].members == ()


def test_epoch_from_start_time_and_pid() -> None:
    info = Info(pid=4242, start_time_sec=1_700_000_000, uptime_sec=5)
    epoch = report.counters_epoch(info, now=1_700_000_005.3)
    assert epoch == (1_700_000_000 << report.PID_BITS) | 4242
    # Same process read later: same epoch, whatever the clock says.
    assert report.counters_epoch(info, now=1_800_000_000) == epoch


def test_epoch_changes_on_reload_and_restart() -> None:
    first = report.counters_epoch(Info(4242, 1_700_000_000, 5), now=0)
    reload_same_second = report.counters_epoch(Info(4243, 1_700_000_000, 0), now=0)
    restart_same_pid = report.counters_epoch(Info(4242, 1_700_000_100, 0), now=0)
    assert len({first, reload_same_second, restart_same_pid}) == 3
    assert restart_same_pid > first  # a later process has a larger epoch


def test_epoch_from_uptime_is_stable_across_jitter() -> None:
    e1 = report.counters_epoch(Info(77, None, 100), now=1_000.9)
    # One reading later the derived start wobbles by a second: keep the epoch.
    e2 = report.counters_epoch(Info(77, None, 110), now=1_010.0, previous=e1)
    assert e2 == e1
    # A new process (new pid, or the same pid with a fresh uptime) gets a new one.
    assert report.counters_epoch(Info(78, None, 1), now=1_011.0, previous=e1) != e1
    assert report.counters_epoch(Info(77, None, 1), now=1_500.0, previous=e1) != e1


def test_epoch_needs_process_facts() -> None:
    with pytest.raises(report.ReportError, match="Uptime_sec"):
        report.counters_epoch(Info(1, None, None), now=0)

"""The schedule (agent/cadence.py) with plain values, and the agent's loop on trio's mock clock."""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from agent import haproxy
from agent.cadence import Cadence, Timing, Why
from agent.config import AgentConfig, Destination
from agent.main import Agent
from agent.sender import SequenceFile, UdpSender

T = Timing(heartbeat_interval=10.0, poll_interval=1.0, coalesce_window=0.2)


def simulate(timing: Timing, states: dict[float, str], until: float) -> list[tuple[float, Why]]:
    """Run the schedule over time: ``states`` says what HAProxy reports from each time on."""
    cadence, sends = Cadence(timing), []
    now = 0.0
    while now <= until:
        state = states[max(t for t in states if t <= now)]
        why, cadence = cadence.decide(now, state)
        if why is not None:
            sends.append((round(now, 6), why))
            cadence = cadence.sent(now, state)
        now = max(cadence.next_wake(), now)
    return sends


def gaps(sends: list[tuple[float, Why]]) -> list[float]:
    return [b[0] - a[0] for a, b in itertools.pairwise(sends)]


def test_steady_state_is_one_heartbeat_per_interval() -> None:
    sends = simulate(T, {0: "all up"}, until=35)
    assert sends == [(0, Why.FIRST), (10, Why.DUE), (20, Why.DUE), (30, Why.DUE)]


def test_a_change_goes_out_at_the_first_poll_that_sees_it_and_restarts_the_interval() -> None:
    sends = simulate(T, {0: "up", 4.5: "member down"}, until=21)
    assert sends == [(0, Why.FIRST), (5, Why.CHANGED), (15, Why.DUE)]


def test_changes_within_the_window_go_out_in_one_heartbeat() -> None:
    # Polled every 50 ms: a second change 100 ms after a heartbeat is held to
    # the end of the window, and the third joins it there.
    fast = Timing(heartbeat_interval=10.0, poll_interval=0.05, coalesce_window=0.2)
    sends = simulate(fast, {0: "a", 1.0: "b", 1.1: "c", 1.15: "d"}, until=3)
    assert sends == [(0, Why.FIRST), (1.0, Why.CHANGED), (1.2, Why.CHANGED)]


def test_a_change_undone_within_the_window_sends_nothing() -> None:
    fast = Timing(heartbeat_interval=10.0, poll_interval=0.05, coalesce_window=0.2)
    sends = simulate(fast, {0: "a", 1.0: "b", 1.05: "a", 1.15: "b"}, until=3)
    assert sends == [(0, Why.FIRST), (1.0, Why.CHANGED)]


def test_flapping_sends_at_most_one_heartbeat_per_window_and_per_poll() -> None:
    flapping = {round(i * 0.01, 2): "ab"[i % 2] for i in range(1000)}
    fast = Timing(heartbeat_interval=10.0, poll_interval=0.05, coalesce_window=0.2)
    sends = simulate(fast, flapping, until=9.99)
    assert len(sends) > 20 and min(gaps(sends)) >= 0.2 - 1e-9
    slow = simulate(T, {round(i * 0.3, 1): "ab"[i % 2] for i in range(40)}, until=11.99)
    assert len(slow) > 5 and min(gaps(slow)) >= 1.0 - 1e-9


def test_poll_slower_than_heartbeats_polls_at_the_heartbeat_interval() -> None:
    slow = Timing(heartbeat_interval=0.5, poll_interval=1.0)
    assert slow.poll_every == 0.5
    assert simulate(slow, {0: "x"}, until=1.6) == [
        (0, Why.FIRST), (0.5, Why.DUE), (1.0, Why.DUE), (1.5, Why.DUE)
    ]  # fmt: skip


def test_paused_sends_at_once_when_allowed_again() -> None:
    cadence = Cadence(T).sent(0.0, "x")
    cadence = cadence.paused(3.0)
    assert cadence.next_wake() == 4.0
    why, _ = cadence.decide(4.0, "x")
    assert why is Why.FIRST


def test_first_poll_is_at_once() -> None:
    assert Cadence(T).next_wake() == -math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval": 0},
        {"heartbeat_interval": 1, "poll_interval": 0},
        {"heartbeat_interval": 1, "coalesce_window": -0.1},
    ],
)
def test_bad_timing_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Timing(**kwargs)


# ---------------------------------------------------------------- the loop itself


def _snapshot(member_status: str) -> haproxy.Snapshot:
    lid, pid, mid = (uuid.UUID(int=i) for i in (1, 2, 3))
    text = "Pid: 5\nStart_time_sec: 100\n\n# pxname,svname,status,weight,type\n"
    text += f"{lid},FRONTEND,OPEN,,0\n{pid}:{lid},BACKEND,UP,1,1\n"
    text += f"{pid}:{lid},{mid},{member_status},1,2\n"
    return haproxy.parse_snapshot(text)


async def test_the_loop_follows_the_schedule(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent.run on virtual time, HAProxy scripted: the DOWN goes out at the next poll."""

    # The sequence reservation is stored inline, not in a worker thread: while a thread
    # runs, the loop looks idle and the clock would jump to the end on a loaded machine.
    async def inline(fn: Callable[[], int]) -> int:
        return fn()

    monkeypatch.setattr(trio.to_thread, "run_sync", inline)
    config = AgentConfig(
        amphora_id=uuid.uuid4().bytes,
        key_id=1,
        key=bytes(32),
        destinations=(Destination("127.0.0.1", 9),),
        haproxy_socket=str(tmp_path / "unused.sock"),
        interval=10.0,
        state_dir=tmp_path,
    )
    agent = Agent(config, SequenceFile(tmp_path, now_ms=1), UdpSender(config.destinations))
    start = trio.current_time()
    sent: list[tuple[float, str]] = []

    async def poll() -> haproxy.Snapshot:
        return _snapshot("DOWN" if trio.current_time() - start >= 12.5 else "UP")

    async def send(datagram: bytes) -> list[tuple[Destination, str | None]]:
        sent.append((round(trio.current_time() - start, 3), datagram.hex()))
        return [(config.destinations[0], None)]

    agent.poll = poll  # type: ignore[method-assign]
    agent.sender.send = send  # type: ignore[method-assign]
    with trio.move_on_after(30.5):
        await agent.run()
    agent.sender.close()
    assert [t for t, _ in sent] == [0, 10, 13, 23]


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)

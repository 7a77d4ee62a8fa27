"""Several real managers on one PostgreSQL or MariaDB database: one truth (issue 8).

2 or 3 ``healthmgr serve`` processes share one database. Amphorae send
round robin (heartbeat i to manager i mod N) or to every manager, and a
member flaps DOWN/UP at random. The database must show the status of the
newest heartbeat sent, lagging it by at most LAG plus the scheduling slack
measured in the run, whichever manager processed what; a manager whose cache
is behind the database corrects it, and an older heartbeat processed later by
another manager never overwrites a newer outcome.

With ``stats_update_every = 2`` and round-robin sending, statistics keep
flowing through every manager, also when one of them is gone.

Each case takes about 8 s of wall time: 20 beats of 0.25 s, so that changes
of state land on different managers in every order (a shorter flap let the
per-manager-cache bug of the issue pass), plus starting 2 or 3 managers.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from healthmgr.wire.ids import Id, id_str
from healthmgr.wire.values import MemberState
from tests.db.factories import make_seed_lb
from tests.manager.conftest import SeededDb, agent_for
from tests.manager.harness import Agent, RunningDaemon
from tests.manager.test_daemon_multi import start_managers

INTERVAL = 0.5  # heartbeat_interval of the managers
BEAT = 0.25  # the agents' sending period
# How far the database may lag the newest heartbeat sent: processing, one
# flush (0.05 s), the commit and the sample itself, with a wide margin. On a
# loaded machine a manager may wait longer for a core than that: the bound adds
# the slack measured in the run (_slack), so that it fails on a manager that is
# behind, not on a busy machine.
LAG = 2 * BEAT
STATUS = {MemberState.UP: "ONLINE", MemberState.DOWN: "ERROR"}


def _member_status(db: SeededDb, member: Id) -> str:
    return str(db.scalar("SELECT operating_status FROM member WHERE id = :i", i=id_str(member)))


def _stop_all(daemons: list[RunningDaemon]) -> None:
    codes = [d.stop() for d in daemons]
    assert codes == [0] * len(daemons), [d.lines[-10:] for d in daemons]


def _warm(db: SeededDb, daemons: list[RunningDaemon], agents: list[Agent]) -> None:
    """Seq 1 (all UP) of every agent to every manager: every cache holds every
    amphora, so no heartbeat below waits for a topology load."""
    for agent in agents:
        datagram = agent.datagram()
        for d in daemons:
            d.send(datagram)
    for d in daemons:
        d.until(lambda d=d: d.metric("healthmgr_tracked_amphorae") == len(agents), what="warm")
    for agent in agents:
        daemons[0].until(
            lambda a=agent: _member_status(db, a.members[1]) == "ONLINE", what="seq 1 written"
        )


@dataclasses.dataclass
class Flapper:
    """Sends one agent's heartbeats with a member flapping at random, and
    remembers when each was sent and what it said."""

    agent: Agent
    daemons: list[RunningDaemon]
    to_all: bool
    rng: random.Random
    # (when, seq, what) of each heartbeat sent; the first is _warm's seq 1 (all UP).
    sent: list[tuple[float, int, MemberState]] = dataclasses.field(
        default_factory=lambda: [(0.0, 1, MemberState.UP)]
    )
    state: MemberState = MemberState.UP
    hold: int = 0
    # (start, end, status) of each sample of the database, judged for lag at the end.
    samples: list[tuple[float, float, str]] = dataclasses.field(default_factory=list)

    @property
    def member(self) -> Id:
        return self.agent.members[1]

    @property
    def name(self) -> str:
        return "to-all" if self.to_all else "round-robin"

    def beat(self, final: MemberState | None) -> None:
        if final is not None:
            self.state = final
        elif self.hold == 0:  # flip, then hold it for 1 to 4 beats
            self.state = MemberState.DOWN if self.state is MemberState.UP else MemberState.UP
            self.hold = self.rng.randint(1, 4)
        self.hold = max(0, self.hold - 1)
        datagram = self.agent.datagram(members={self.member: self.state})
        seq = self.agent.seq
        targets = self.daemons if self.to_all else [self.daemons[seq % len(self.daemons)]]
        self.sent.append((time.monotonic(), seq, self.state))
        for d in targets:
            d.send(datagram)

    def said(self, seq: int) -> str:
        return next(STATUS[state] for _, s, state in self.sent if s == seq)

    def recent(self, start: float, end: float, lag: float) -> set[str]:
        """Statuses a sample taken between ``start`` and ``end`` may show by
        timing alone: what a heartbeat sent up to ``lag`` before it said, or the
        last one sent before that."""
        before = [state for t, _, state in self.sent if t <= start - lag]
        recent = {state for t, _, state in self.sent if start - lag < t <= end}
        return {STATUS[state] for state in recent | set(before[-1:])}

    def lagging(self, lag: float) -> list[str]:
        """The samples that showed a status older than ``lag`` allows."""
        return [
            f"{self.name}: {status} at {end:.2f}, more than {lag:.2f} s after"
            f" the newest heartbeat before it said otherwise"
            for start, end, status in self.samples
            if status not in self.recent(start, end, lag)
        ]

    def check(self, db: SeededDb, newest: list[int]) -> list[str]:
        """One sample of the database: what is wrong with it (nothing, if all is well).

        The newest report (its order is the seq) and the member's status are read
        in one statement, so from one snapshot: the status must be what that
        heartbeat said (newest wins, whichever manager processed what) and the
        order must never go back. The sample is kept to judge its lag at the end
        (``lagging``)."""
        start = time.monotonic()
        ((order, status),) = db.rows(
            "SELECT h.report_order, m.operating_status FROM healthmgr_amphora h, member m"
            " WHERE h.amphora_id = :a AND m.id = :m",
            a=id_str(self.agent.amphora),
            m=id_str(self.member),
        )
        end = time.monotonic()
        wrong = []
        if status != self.said(order):
            wrong.append(
                f"{self.name}: {status} with the report of seq {order},"
                f" which said {self.said(order)}"
            )
        if order < newest[0]:
            wrong.append(f"{self.name}: report order went back from {newest[0]} to {order}")
        newest[0] = max(newest[0], order)
        self.samples.append((start, end, status))
        return wrong


def _worst_commit_lag(daemon: RunningDaemon) -> float:
    """The daemon's longest arrival-to-commit time so far: the upper edge of the
    lowest bucket of healthmgr_commit_lag_seconds that holds every heartbeat."""
    buckets: list[tuple[float, float]] = []
    for line in daemon.metrics().splitlines():
        if line.startswith("healthmgr_commit_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rpartition(" ")[2])))
    total = max(count for _, count in buckets)
    return min(le for le, count in buckets if count == total)


def _flap(
    db: SeededDb,
    daemons: list[RunningDaemon],
    flappers: list[Flapper],
    beats: int,
    final: MemberState,
) -> list[str]:
    """Flap for ``beats`` beats, then hold ``final`` for 4; sample the database
    all the while. Returns what was wrong with the samples.

    Their lag is judged against LAG plus the scheduling slack measured meanwhile:
    how much longer than asked this process slept at worst (how busy the machine
    is) and the managers' longest arrival-to-commit time (how far behind they ran).
    """
    stop = threading.Event()
    overslept = [0.0]

    def send() -> None:
        for i in range(beats + 4):
            for f in flappers:
                f.beat(final if i >= beats else None)
            asleep = time.monotonic()
            time.sleep(BEAT)
            overslept[0] = max(overslept[0], time.monotonic() - asleep - BEAT)
        stop.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wrong: list[str] = []
    newest = {id(f): [0] for f in flappers}
    samples = 0
    while not stop.is_set():
        for f in flappers:
            wrong += f.check(db, newest[id(f)])
            samples += 1
        time.sleep(0.01)
    sender.join()
    assert samples > 2 * beats  # the sampling kept up
    slack = overslept[0] + max(_worst_commit_lag(d) for d in daemons)
    for f in flappers:
        wrong += f.lagging(LAG + slack)
    return wrong


# The conditioned writes themselves are proven on all three databases by
# tests/db/test_store_flush.py (older flushed later, a cache behind, concurrent flushes
# of two managers). Through real managers: three on PostgreSQL by default; with
# --every-database (CI) two on MariaDB too, so that each number of managers runs.
FLAPPING_MANAGERS = {"postgresql": 3, "mysql": 2}


@pytest.mark.databases("postgresql")
def test_newest_heartbeat_wins_with_flapping_members(
    server_seeded: SeededDb, config_dir: Path
) -> None:
    db = server_seeded
    managers = FLAPPING_MANAGERS[db.engine.dialect.name]
    rr = db.agent()
    to_all = agent_for(make_seed_lb(db.engine, operating_status="OFFLINE", with_health=False))
    explicit = agent_for(make_seed_lb(db.engine, operating_status="OFFLINE", with_health=False))
    daemons = start_managers(
        db.url, config_dir, managers, heartbeat_interval=INTERVAL, heartbeat_timeout=5.0
    )
    try:
        _warm(db, daemons, [rr, to_all, explicit])
        flappers = [
            Flapper(rr, daemons, False, random.Random(8 * managers)),
            Flapper(to_all, daemons, True, random.Random(8 * managers + 1)),
        ]
        wrong = _flap(db, daemons, flappers, beats=16, final=MemberState.DOWN)
        assert wrong == []
        for f in flappers:  # after the last change, within a bounded wait (a flush)
            daemons[0].until(
                lambda f=f: _member_status(db, f.member) == "ERROR",
                what="final DOWN shown",
                timeout=5,
            )
        for f in flappers:
            assert (
                db.scalar("SELECT operating_status FROM pool WHERE id = :i", i=id_str(f.agent.pool))
                == "DEGRADED"
            )

        _cache_behind_and_older_flushed_later(db, daemons, explicit)
        assert sum(d.metric("healthmgr_flush_failures_total") for d in daemons) == 0
    finally:
        _stop_all(daemons)


def _cache_behind_and_older_flushed_later(
    db: SeededDb, daemons: list[RunningDaemon], agent: Agent
) -> None:
    """Explicit sequence numbers to explicit managers (the agent's seq is 1)."""
    a, b = daemons[0], daemons[1]
    member = agent.members[1]
    down, up = {member: MemberState.DOWN}, {member: MemberState.UP}

    def shows(status: str) -> Callable[[], bool]:
        return lambda: _member_status(db, member) == status

    # A manager whose cache is behind the database corrects it: A writes
    # ERROR; B, whose cache still says ONLINE, gets the newer UP.
    a.send(agent.datagram(seq=2, members=down))
    a.until(shows("ERROR"), what="A wrote ERROR", timeout=5)
    b.send(agent.datagram(seq=3, members=up))
    b.until(shows("ONLINE"), what="B corrected the database to ONLINE", timeout=5)

    # An older heartbeat processed later never overwrites a newer outcome: B
    # processes seq 10 (DOWN); then A, which has seen nothing above 2, seq 9 (UP).
    b.send(agent.datagram(seq=10, members=down))
    b.until(shows("ERROR"), what="B wrote seq 10's ERROR", timeout=5)
    accepted = a.metric("healthmgr_heartbeats_total", result="accepted")
    a.send(agent.datagram(seq=9, members=up))
    a.until(
        lambda: a.metric("healthmgr_heartbeats_total", result="accepted") == accepted + 1,
        what="A accepted seq 9",
    )
    time.sleep(0.3)  # several of A's flushes: an overwrite would show by now
    assert _member_status(db, member) == "ERROR"
    order = db.scalar(
        "SELECT report_order FROM healthmgr_amphora WHERE amphora_id = :a", a=id_str(agent.amphora)
    )
    assert order == 10
    # A's next, newer heartbeat does win.
    a.send(agent.datagram(seq=11, members=up))
    a.until(shows("ONLINE"), what="A wrote seq 11's ONLINE", timeout=5)


def _stats(db: SeededDb, agent: Agent) -> tuple[int, ...] | None:
    rows = db.rows(
        "SELECT bytes_in, bytes_out, total_connections, request_errors FROM listener_statistics"
        " WHERE listener_id = :l AND amphora_id = :a",
        l=id_str(agent.listener),
        a=id_str(agent.amphora),
    )
    return tuple(rows[0]) if rows else None


# The statistics' conditioned writes are proven on all three by tests/db/test_store_flush.py
# (two managers sharing an amphora); here stats_update_every across managers: one server.
@pytest.mark.databases("postgresql")
def test_statistics_keep_flowing_with_stats_update_every_and_round_robin(
    server_seeded: SeededDb, config_dir: Path
) -> None:
    """Two managers, ``stats_update_every = 2``, heartbeat i to manager i mod 2:
    the totals equal the counters of the last heartbeat sent; then manager 0
    (the even sequence numbers) stops, and the totals still reach the counters
    of the last heartbeat manager 1 (the odd ones) received."""
    db = server_seeded
    agent = db.agent()
    agent.interval_ms = int(BEAT * 1000)  # what the heartbeats say matches the sending
    agent.step = (1000, 2500, 3, 1)
    daemons = start_managers(
        db.url, config_dir, 2, heartbeat_interval=INTERVAL, stats_update_every=2
    )
    try:
        _warm(db, daemons, [agent])

        def beats(count: int) -> tuple[int, ...]:
            """``count`` heartbeats round robin; the counters the last live manager got."""
            delivered: tuple[int, ...] = ()
            for _ in range(count):
                datagram = agent.datagram()
                target = daemons[agent.seq % 2]
                if target.proc.poll() is None:
                    target.send(datagram)
                    delivered = tuple(agent.counters)
                time.sleep(BEAT)
            return delivered

        last = beats(12)
        daemons[1].until(lambda: _stats(db, agent) == last, what="totals of the last heartbeat")
        assert daemons[0].stop() == 0  # the manager of the even sequence numbers is gone
        last = beats(9)
        daemons[1].until(
            lambda: _stats(db, agent) == last,
            what="totals through the manager of the odd sequence numbers",
        )
        assert last[0] == 1000 * 21  # seq 22 was the last sent: lost with manager 0
    finally:
        _stop_all(daemons)

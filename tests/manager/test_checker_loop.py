"""The health check's loop in-process, under trio's MockClock.

A stand-in store replays a simulated fleet (the real one is exercised by the
daemon tests against real databases); what is proven here is the wiring of
the loop: the clock it judges by, impairment and grace, observers, claims and
stops handed to the store and the runner, reasons counted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import trio
import trio.testing

from healthmgr.db.claims import CheckRead, Claim, ManagerRow, SilentRow, TakeOver
from healthmgr.manager.checker import Checker, CheckerSettings
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.monitor import CheckState
from healthmgr.manager.verdict_log import VerdictLog
from healthmgr.rules.detector import Detector, DetectorConfig, Threshold
from healthmgr.rules.impairment import Impairment, Sample
from healthmgr.wire.ids import id_bytes

T, INTERVAL, CHECK = 6.0, 1.0, 0.5
ME, PEER = "hm-b", "hm-a"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class Fleet:
    """The database as the check reads it: who went silent when (trio time)."""

    silent_since: dict[str, float] = field(default_factory=dict)
    observer: dict[str, str] = field(default_factory=dict)
    peer_age: float = 0.1
    peer_impaired: bool = False
    size: int = 100
    stopped: set[str] = field(default_factory=set)
    claimed: list[str] = field(default_factory=list)

    def read_for_check(self, suspect_cutoff, window_start, limit) -> CheckRead:
        now, wall = trio.current_time(), utcnow()
        rows = [
            SilentRow(
                a,
                "lb-" + a,
                wall - dt.timedelta(seconds=now - t0),
                a in self.stopped,
                self.observer.get(a, ME),
                False,
            )
            for a, t0 in sorted(self.silent_since.items(), key=lambda kv: kv[1])
            if a not in self.claimed and wall - dt.timedelta(seconds=now - t0) < suspect_cutoff
        ]
        peer = ManagerRow(
            PEER,
            self.peer_age,
            self.peer_impaired,
            None,
            None if self.peer_impaired else 3600.0,
            False,
        )
        return CheckRead(rows, len(rows), self.size, len(self.stopped), 0, [peer], wall)

    def stop(self, ids, cutoff) -> list[str]:
        self.stopped |= set(ids)
        return list(ids)

    def claim(self, wanted, cutoff, manager, lease, limit=None) -> list[Claim]:
        taken = sorted(wanted)[:limit]
        self.claimed += taken
        return [
            Claim(id_bytes(f"00000000-0000-0000-0000-{i:012d}"), None, i)
            for i, _ in enumerate(taken)
        ]

    def take_over(self, manager, lease, limit, cutoff) -> TakeOver:
        return TakeOver([], [])


class InlineDb(DbCalls):
    """The stand-in store does no I/O: call it in the trio thread (it reads trio's clock)."""

    async def run(self, fn, *args):  # type: ignore[no-untyped-def, override]
        return fn(*args)


class Runner:
    def __init__(self) -> None:
        self.started: list[Claim] = []

    def free_slots(self) -> int:
        return 10

    def start(self, claim: Claim) -> None:
        self.started.append(claim)


def make(fleet: Fleet, impairment: Impairment, **cfg) -> tuple[Checker, Runner, Metrics]:
    cfg.setdefault("threshold", Threshold(count=20))
    detector = Detector(
        DetectorConfig(
            heartbeat_timeout=T,
            heartbeat_interval=INTERVAL,
            observer_fresh=2.0,
            observer_timeout=60.0,
            **cfg,
        )
    )
    runner, metrics = Runner(), Metrics(process=False)
    checker = Checker(
        store=fleet,
        runner=runner,
        detector=detector,
        impairment=impairment,  # type: ignore[arg-type]
        checks=CheckState(),
        db=InlineDb(),
        metrics=metrics,
        verdicts=VerdictLog(),
        cfg=CheckerSettings(ME, T, CHECK, 30.0),
    )
    return checker, runner, metrics


async def loop_for(checker: Checker, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await checker.run()


def verdicts(metrics: Metrics, verdict: str, reason: str) -> float:
    return (
        metrics.value("healthmgr_failover_verdicts_total", {"verdict": verdict, "reason": reason})
        or 0.0
    )


async def test_a_dead_amphora_is_claimed_after_grace_timeout_and_settle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = Fleet()
    checker, runner, metrics = make(fleet, Impairment(2.0, 0.5, started_at=trio.current_time()))
    fleet.silent_since["dead"] = trio.current_time()
    await loop_for(checker, T + 2 * INTERVAL - CHECK)  # grace, timeout, settle: not yet
    assert runner.started == []
    await loop_for(checker, 3 * CHECK)
    assert fleet.claimed == ["dead"] and len(runner.started) == 1
    assert verdicts(metrics, "failover", "heartbeat_timeout") == 1
    assert verdicts(metrics, "defer", "settling") == 1


async def test_an_impaired_manager_claims_nothing_until_a_grace_after_recovery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = Fleet({"dead": -100.0})
    impairment = Impairment(2.0, 0.5, started_at=-1000.0)
    impairment.update(Sample(now=trio.current_time(), db_failing=True))
    checker, runner, _ = make(fleet, impairment)
    await loop_for(checker, 5 * T)
    assert runner.started == []
    impairment.update(Sample(now=trio.current_time()))
    await loop_for(checker, T - CHECK)
    assert runner.started == []  # the grace after recovering
    await loop_for(checker, 2 * CHECK)
    assert fleet.claimed == ["dead"]


async def test_a_cut_off_observers_amphorae_wait_for_it_and_the_dead_one_goes_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Case 1: the peer's liveness row goes stale (blackholed): its 50 amphorae
    look silent here, and none is failed over; when the peer is back and healthy
    for a timeout, the one that really died is failed over."""
    fleet = Fleet()
    fleet.silent_since = {f"amp-{i}": trio.current_time() for i in range(50)}
    fleet.observer = dict.fromkeys(fleet.silent_since, PEER)
    fleet.peer_age = 30.0
    checker, runner, metrics = make(fleet, Impairment(2.0, 0.5, started_at=-1000.0))
    await loop_for(checker, 30.0)
    assert runner.started == [] and fleet.stopped == set()
    assert verdicts(metrics, "defer", "observer_unreachable") == 50
    # The peer is back: 49 amphorae it sees beat again, one is dead.
    fleet.peer_age = 0.1
    fleet.silent_since = {"amp-7": fleet.silent_since["amp-7"]}
    await loop_for(checker, 2 * CHECK)
    assert fleet.claimed == ["amp-7"]


async def test_a_gradual_mass_outage_stops_and_fails_over_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = Fleet()
    checker, runner, metrics = make(fleet, Impairment(2.0, 0.5, started_at=-1000.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop_for, checker, 4 * T)
        for i in range(40):  # 40 of 100 go silent over a whole heartbeat_timeout
            fleet.silent_since[f"amp-{i}"] = trio.current_time()
            await trio.sleep(T / 40)
    assert runner.started == []
    assert fleet.stopped == set(fleet.silent_since)
    assert metrics.value("healthmgr_circuit_breaker_open") == 1

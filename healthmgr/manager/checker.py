"""The health check: read the database, let the detector judge, act on its verdicts.

Every ``health_check_interval``: one read of the silent amphorae and of every
manager's liveness (:meth:`Store.read_for_check`), one pure decision
(:class:`healthmgr.rules.detector.Detector`), then the actions: FAILOVER_STOPPED for
the breaker, claims (exactly once across managers) for failovers, and the
take-over of claims whose lease expired. Every verdict is logged with its
reason when it changes, and counted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import structlog
import trio

from healthmgr.db.claims import CheckRead
from healthmgr.db.dbtime import utcnow
from healthmgr.db.store import Store
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.monitor import CheckState
from healthmgr.manager.runner import FailoverRunner
from healthmgr.manager.verdict_log import VerdictLog
from healthmgr.rules.detector import (
    OBSERVER_PRESUMED_DEAD,
    Action,
    Decision,
    Detector,
    Observer,
    SelfHealth,
    Silent,
    Snapshot,
    Verdict,
)
from healthmgr.rules.impairment import Impairment

log = structlog.get_logger("healthmgr.checker")

SILENT_LIMIT = 10_000  # silent amphorae listed per check (all are counted)


@dataclass
class CheckerSettings:
    manager_id: str
    heartbeat_timeout: float
    health_check_interval: float
    lease: float
    silent_limit: int = SILENT_LIMIT


class Checker:
    def __init__(
        self,
        *,
        store: Store,
        runner: FailoverRunner,
        detector: Detector,
        impairment: Impairment,
        checks: CheckState,
        db: DbCalls,
        metrics: Metrics,
        verdicts: VerdictLog,
        cfg: CheckerSettings,
    ) -> None:
        self.store = store
        self.runner = runner
        self.detector = detector
        self.impairment = impairment
        self.checks = checks
        self.db = db
        self.metrics = metrics
        self.verdicts = verdicts
        self.cfg = cfg
        self._not_judging: str | None = "starting"
        self._last: dict[str, tuple[Action, str]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.check_once()
            await trio.sleep(self.cfg.health_check_interval)

    async def check_once(self) -> Decision | None:
        now = trio.current_time()
        wall = utcnow()
        suspect_cutoff = wall - dt.timedelta(seconds=self.detector.config.listed_after)
        window_start = wall - dt.timedelta(seconds=self.cfg.heartbeat_timeout)
        try:
            read = await self.db.run(
                self.store.read_for_check, suspect_cutoff, window_start, self.cfg.silent_limit
            )
        except Exception as exc:  # database trouble: the monitor makes us impaired
            if not self.checks.read_failed:
                log.error(
                    "health check could not read the database",
                    error=(str(exc).splitlines() or [type(exc).__name__])[0][:300],
                )
            self.checks.read_failed = True
            return None
        self.checks.read_failed = False
        me = SelfHealth(
            self.impairment.impaired, self.impairment.reason(), self.impairment.healthy_for(now)
        )
        snap = self._snapshot(read, wall, me)
        decision = self.detector.decide(snap, me, now)
        self.checks.last_check = now
        self._gauges(read, decision)
        self._say_judging(decision)
        if not decision.judging:
            if not me.impaired:
                await self._take_over(wall)  # a claim whose owner died: its verdict stands
            return decision
        self._breaker(decision)
        await self._stop(decision, wall)
        await self._claim(decision, wall)
        await self._take_over(wall)
        self._log_verdicts(decision)
        return decision

    # -- reading -------------------------------------------------------------

    def _snapshot(self, read: CheckRead, wall: dt.datetime, me: SelfHealth) -> Snapshot:
        silent = [
            Silent(
                r.amphora_id,
                r.load_balancer_id,
                (wall - r.last_update).total_seconds(),
                r.stopped,
                r.observed_by,
                r.beating_unhealthy,
            )
            for r in read.silent
        ]
        observers = {
            m.manager_id: Observer(m.manager_id, m.age, m.impaired, m.healthy_for, m.stopped)
            for m in read.managers
        }
        # This manager knows itself better than its last row says.
        observers[self.cfg.manager_id] = Observer(
            self.cfg.manager_id, 0.0, me.impaired, me.healthy_for
        )
        return Snapshot(
            silent,
            read.silent_count,
            read.fleet,
            read.stopped_count,
            read.recent_failovers,
            observers,
        )

    def _gauges(self, read: CheckRead, decision: Decision) -> None:
        self.metrics.set_stale(
            decision.stale
            if decision.judging
            else sum(
                1
                for r in read.silent
                if (read.db_now - r.last_update).total_seconds() >= self.cfg.heartbeat_timeout
            )
        )
        self.metrics.silent_amphorae.set(read.silent_count)
        self.metrics.set_breaker(decision.breaker_open)
        fresh = self.detector.config.observer_fresh
        states = {"live": 0, "impaired": 0, "stale": 0}
        for m in read.managers:
            if m.manager_id == self.cfg.manager_id:
                continue
            state = (
                "stale" if m.stopped or m.age > fresh else ("impaired" if m.impaired else "live")
            )
            states[state] += 1
        for state, count in states.items():
            self.metrics.peer_managers.labels(state).set(count)

    # -- acting --------------------------------------------------------------

    def _say_judging(self, decision: Decision) -> None:
        why = decision.not_judging_because
        if why == self._not_judging:
            return
        if why is None:
            log.info("health check judging again")
        elif why == "grace":
            log.info("health check in its grace period: no failover verdict yet")
        else:
            log.warning("health check not judging", reason=why)
        self._not_judging = why

    def _breaker(self, decision: Decision) -> None:
        self.checks.breaker_open = decision.breaker_open
        self.checks.breaker_reason = decision.breaker_reason or None
        if not decision.breaker_changed:
            return
        if decision.breaker_open:
            log.error(
                "failover circuit breaker open: no failover starts",
                reason=decision.breaker_reason,
                failover_threshold=decision.threshold,
            )
        else:
            log.warning("failover circuit breaker closed", reason=decision.breaker_reason)

    async def _stop(self, decision: Decision, wall: dt.datetime) -> None:
        if not decision.stop:
            return
        ids = [v.amphora_id for v in decision.stop]
        stopped = await self._write(self.store.stop, ids, self._cutoff(wall))
        if stopped:
            self.metrics.count_failover("stopped_by_breaker", len(stopped))

    async def _claim(self, decision: Decision, wall: dt.datetime) -> None:
        free = self.runner.free_slots()
        # All of them, at most `free` claimed: what another manager holds is
        # skipped and the next taken, so managers share a burst.
        wanted = {v.amphora_id: v.reason for v in decision.failover}
        if not wanted or not free:
            return
        claims = await self._write(
            self.store.claim, wanted, self._cutoff(wall), self.cfg.manager_id, self.cfg.lease, free
        )
        for claim in claims or ():
            self.runner.start(claim)
        if claims:
            self.checks.last_claim = trio.current_time()

    async def _take_over(self, wall: dt.datetime) -> None:
        free = self.runner.free_slots()
        if not free:
            return
        taken = await self._write(
            self.store.take_over, self.cfg.manager_id, self.cfg.lease, free, self._cutoff(wall)
        )
        if taken is None:
            return
        for request, amphora, why in taken.abandoned:
            log.warning(
                "failover request given up at take-over",
                request=request,
                amphora_id=amphora,
                reason=why,
            )
        for claim in taken.claims:
            self.metrics.count_failover("taken_over")
            log.warning(
                "taking over a failover request",
                request=claim.request_id,
                previous_owner=claim.taken_over_from,
                reason=claim.reason,
            )
            self.runner.start(claim)
        if taken.claims:
            self.checks.last_claim = trio.current_time()

    async def _write(self, fn, *args):  # type: ignore[no-untyped-def]
        try:
            return await self.db.run(fn, *args)
        except Exception as exc:  # the next check tries again; the monitor sees the trouble
            log.error(
                "health check could not write its verdict",
                action=getattr(fn, "__name__", str(fn)),
                error=(str(exc).splitlines() or [type(exc).__name__])[0][:300],
            )
            return None

    def _cutoff(self, wall: dt.datetime) -> dt.datetime:
        return wall - dt.timedelta(seconds=self.cfg.heartbeat_timeout)

    # -- reasons ---------------------------------------------------------------

    def _log_verdicts(self, decision: Decision) -> None:
        seen: dict[str, tuple[Action, str]] = {}
        for v in (*decision.failover, *decision.stop, *decision.deferred):
            seen[v.amphora_id] = (v.action, v.reason)
            if self._last.get(v.amphora_id) != (v.action, v.reason):
                self._announce(v)
        self._last = seen

    def _announce(self, v: Verdict) -> None:
        self.metrics.count_verdict(v.action.value, v.reason)
        if v.action is Action.FAILOVER:
            event, level = (
                "failover verdict",
                "error" if v.reason == OBSERVER_PRESUMED_DEAD else "warning",
            )
        elif v.action is Action.STOP:
            event, level = "failover stopped by the circuit breaker", "warning"
        else:
            event, level = "failover deferred", "info"
        self.verdicts.say(
            event,
            kind=f"{v.action.value}:{v.reason}",
            amphora_id=v.amphora_id,
            lb_id=v.load_balancer_id,
            level=level,
            verdict=v.action.value,
            reason=v.reason,
        )

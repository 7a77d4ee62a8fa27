"""Failure detection and failover dispatch.

The database is the shared truth: stale amphorae are found by their
``last_update`` there and claimed with a row lock, so with several managers
each stale amphora is failed over exactly once.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import structlog
import trio

from healthmgr import constants as C
from healthmgr.db.store import Claim, Store
from healthmgr.manager.failover import (
    DriverResult,
    FailoverFailed,
    FailoverJob,
    run_with_retries,
)
from healthmgr.manager.writer import WriterState
from healthmgr.metrics import Metrics
from healthmgr.wire.values import id_str

log = structlog.get_logger("healthmgr.checker")

CLEANUP_TIMEOUT = 5.0
REASON = "heartbeat_timeout"


@dataclass
class CheckerSettings:
    heartbeat_timeout: float
    health_check_interval: float
    failover_threshold: int | None
    failover_threads: int
    max_attempts: int
    retry_backoff: float
    manager_id: str


class FailoverRunner:
    """Runs claimed failovers with bounded concurrency; owns their tasks."""

    def __init__(self, store: Store, driver: object, metrics: Metrics, cfg: CheckerSettings):
        self.store = store
        self.driver = driver
        self.metrics = metrics
        self.cfg = cfg
        self.in_flight = 0
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()
        self._idle.set()

    def free_slots(self) -> int:
        return max(0, self.cfg.failover_threads - self.in_flight)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def start(self, claim: Claim) -> None:
        assert self._nursery is not None, "FailoverRunner.run is not running"
        self.in_flight += 1
        self._idle = trio.Event()
        self._nursery.start_soon(self._run_one, claim)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _run_one(self, claim: Claim) -> None:
        job = FailoverJob(
            amphora_id=id_str(claim.amphora_id),
            load_balancer_id=id_str(claim.load_balancer_id) if claim.load_balancer_id else None,
            reason=REASON,
            request_id=claim.request_id,
            attempt=1,
        )
        try:
            await self._drive(claim, job)
        except BaseException:
            # Cancelled at shutdown (possibly wrapped in an exception group by
            # the driver's own nursery) or crashed: never leave the amphora busy
            # with its request open.
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                await self._abandon(claim, job)
            raise
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _drive(self, claim: Claim, job: FailoverJob) -> None:
        log.warning("failing over amphora", amphora_id=job.amphora_id, lb_id=job.load_balancer_id)
        attempts = 0

        async def on_attempt(attempt: int, error: Exception | None) -> None:
            nonlocal attempts
            attempts = attempt
            if error is not None:
                if attempt < self.cfg.max_attempts:  # the last failure is "failed", not retried
                    self.metrics.count_failover("retried")
                await trio.to_thread.run_sync(
                    self.store.update_failover_request,
                    claim.request_id, C.FAILOVER_RUNNING, attempt, str(error),
                )

        try:
            result = await run_with_retries(
                self.driver, job,
                max_attempts=self.cfg.max_attempts,
                backoff=self.cfg.retry_backoff,
                on_attempt=on_attempt,
            )
        except FailoverFailed as exc:
            await self._failed(claim, job, attempts, exc)
            return
        await self._succeeded(claim, job, attempts, result)

    async def _succeeded(
        self, claim: Claim, job: FailoverJob, attempts: int, result: DriverResult
    ) -> None:
        if result is DriverResult.HANDED_OFF:
            # The request row stays PENDING for the API's worker to consume.
            self.metrics.count_failover("requested")
            log.info("failover requested", amphora_id=job.amphora_id, request=claim.request_id)
            return
        await trio.to_thread.run_sync(
            self.store.update_failover_request,
            claim.request_id, C.FAILOVER_SUCCEEDED, max(attempts, 1), None,
        )
        await trio.to_thread.run_sync(self.store.finish_failover, claim, True)
        self.metrics.count_failover("succeeded")
        log.warning("failover succeeded", amphora_id=job.amphora_id, attempts=attempts)

    async def _failed(
        self, claim: Claim, job: FailoverJob, attempts: int, exc: FailoverFailed
    ) -> None:
        await trio.to_thread.run_sync(
            self.store.update_failover_request,
            claim.request_id, C.FAILOVER_FAILED, attempts, str(exc),
        )
        await trio.to_thread.run_sync(self.store.finish_failover, claim, False)
        if claim.load_balancer_id is not None:
            await trio.to_thread.run_sync(self.store.mark_lb_error, claim.load_balancer_id)
        self.metrics.count_failover("failed")
        log.error(
            "failover failed; load balancer set to provisioning_status ERROR",
            amphora_id=job.amphora_id, lb_id=job.load_balancer_id, attempts=attempts,
            error=str(exc),
        )

    async def _abandon(self, claim: Claim, job: FailoverJob) -> None:
        try:
            # One transaction: request ABANDONED and busy cleared together.
            await trio.to_thread.run_sync(self.store.abandon, claim, "manager shutting down")
        except Exception as exc:  # the database may be gone too; say so and move on
            log.error("could not record abandoned failover", amphora_id=job.amphora_id,
                      error=str(exc))
        self.metrics.count_failover("abandoned")


class Checker:
    """Every ``health_check_interval``: count, break the circuit, or claim."""

    def __init__(
        self,
        store: Store,
        runner: FailoverRunner,
        metrics: Metrics,
        cfg: CheckerSettings,
        db_state: WriterState,
    ) -> None:
        self.store = store
        self.runner = runner
        self.metrics = metrics
        self.cfg = cfg
        self.db_state = db_state
        self.started_at = time.monotonic()
        self.breaker_open = False
        self._db_ok = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.check_once()
            await trio.sleep(self.cfg.health_check_interval)

    def in_grace(self, now: float) -> bool:
        """No failover until a full timeout has passed since start or a database outage."""
        since = max(self.started_at, self.db_state.recovered_at)
        return not self.db_state.healthy or now - since < self.cfg.heartbeat_timeout

    async def check_once(self) -> None:
        cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(
            seconds=self.cfg.heartbeat_timeout
        )
        try:
            await self._check(cutoff)
        except Exception as exc:  # database trouble: grace again once it is back
            if self._db_ok:
                log.error("health check failed", error=str(exc).splitlines()[0])
            self._db_ok = False
            return
        if not self._db_ok:
            self._db_ok = True
            self.db_state.recovered_at = time.monotonic()

    async def _check(self, cutoff: dt.datetime) -> None:
        stale = await trio.to_thread.run_sync(self.store.count_stale, cutoff)
        self.metrics.set_stale(stale)
        threshold = self.cfg.failover_threshold
        if threshold is None or stale < threshold:
            self._close_breaker()  # also when none is stale any more: heartbeats came back
        if self.in_grace(time.monotonic()) or not stale:
            return
        if threshold is not None and stale >= threshold:
            await self._break(cutoff, stale, threshold)
            return
        slots = self.runner.free_slots()
        if slots == 0:
            return
        claims = await trio.to_thread.run_sync(
            self.store.claim_stale, cutoff, slots, self.cfg.manager_id, REASON
        )
        for claim in claims:
            self.runner.start(claim)

    async def _break(self, cutoff: dt.datetime, stale: int, threshold: int) -> None:
        stopped = await trio.to_thread.run_sync(self.store.stop_stale, cutoff)
        opened = not self.breaker_open
        self.breaker_open = True
        self.metrics.set_breaker(True)
        self.metrics.count_failover("stopped_by_breaker", len(stopped))
        if not (opened or stopped):
            return  # said already; not once per health check while it stays open
        log.error(
            "failover circuit breaker open: too many stale amphorae, no failover started",
            stale=stale, failover_threshold=threshold, stopped=len(stopped),
        )

    def _close_breaker(self) -> None:
        if self.breaker_open:
            log.warning("failover circuit breaker closed")
        self.breaker_open = False
        self.metrics.set_breaker(False)

"""The failover runner: runs claimed failovers, owns every error they meet.

Each claim is a lease on a RUNNING ``failover_request``; the runner renews
the leases of what it runs, and records an outcome only when it is known:

- the driver handed off (PENDING), succeeded or failed (after its retries):
  recorded, retrying until the database accepts it (another manager may have
  taken the request over meanwhile: then it is theirs);
- the driver was stopped at shutdown with the outcome unknown: ABANDONED and
  ``busy`` cleared, so any manager claims the amphora again if it is still
  stale (drivers are idempotent);
- anything else unexpected (a bug, the database gone at the last moment): the
  request stays RUNNING and its lease expires, after which any manager takes
  it over and runs the driver again.

No exception from a driver or from the database leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
import tenacity
import trio

from healthmgr.db.claims import Claim
from healthmgr.db.store import Store
from healthmgr.logging import one_line
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.failover import (
    DriverResult,
    FailoverFailed,
    FailoverJob,
    close_driver,
    run_with_retries,
)
from healthmgr.manager.metrics import Metrics
from healthmgr.rules import constants as C
from healthmgr.wire.ids import id_str

log = structlog.get_logger("healthmgr.runner")

CLEANUP_TIMEOUT = 5.0
RECORD_BACKOFF = (0.5, 1.0, 2.0, 5.0)


@dataclass
class RunnerSettings:
    manager_id: str
    failover_threads: int
    max_attempts: int
    retry_backoff: float
    lease: float  # seconds a claim is held without renewal


class FailoverRunner:
    """Runs claimed failovers with bounded concurrency; owns their tasks."""

    def __init__(
        self, store: Store, driver: object, metrics: Metrics, cfg: RunnerSettings, db: DbCalls
    ) -> None:
        self.store = store
        self.driver = driver
        self.metrics = metrics
        self.cfg = cfg
        self.db = db
        self._held: dict[int, Claim] = {}
        self._uses: dict[int, object] = {}  # request id -> the driver its job runs on
        self._retired: list[object] = []  # replaced drivers a running job still uses
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def free_slots(self) -> int:
        return max(0, self.cfg.failover_threads - self.in_flight)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._renew_leases)
                task_status.started()
                await trio.sleep_forever()
        finally:
            for driver in [*self._retired, self.driver]:
                close_driver(driver)
            self._retired.clear()

    def replace_driver(self, driver: object) -> None:
        """Run new jobs on ``driver`` (a reload); the old one is closed as soon as
        no running job uses it: a job keeps the driver it started with."""
        old, self.driver = self.driver, driver
        self._retired.append(old)
        self._close_unused()

    def _close_unused(self) -> None:
        in_use = {id(d) for d in self._uses.values()}
        for driver in [d for d in self._retired if id(d) not in in_use]:
            self._retired.remove(driver)
            close_driver(driver)

    def start(self, claim: Claim) -> None:
        assert self._nursery is not None, "FailoverRunner.run is not running"
        self._held[claim.request_id] = claim
        self._idle = trio.Event()
        self._nursery.start_soon(self._run_one, claim)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _renew_leases(self) -> None:
        while True:
            await trio.sleep(self.cfg.lease / 3)
            if not self._held:
                continue
            try:
                await self.db.run(
                    self.store.renew_leases, self.cfg.manager_id, list(self._held), self.cfg.lease
                )
            except Exception as exc:  # the database is gone: the lease may lapse
                log.warning(
                    "could not renew failover leases",
                    error=one_line(exc),
                    requests=sorted(self._held),
                )

    async def _run_one(self, claim: Claim) -> None:
        job = FailoverJob(
            amphora_id=id_str(claim.amphora_id),
            load_balancer_id=id_str(claim.load_balancer_id) if claim.load_balancer_id else None,
            reason=claim.reason,
            request_id=claim.request_id,
            attempt=claim.attempts + 1,
        )
        try:
            state, attempts, error = await self._drive(claim, job)
        except BaseException:
            # Cancelled at shutdown (possibly wrapped in an exception group by
            # the driver's own nursery) with the outcome unknown: give it back.
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                await self._record(
                    claim,
                    job,
                    C.FAILOVER_ABANDONED,
                    claim.attempts,
                    "manager shutting down",
                    retry=False,
                )
            self.metrics.count_failover("abandoned")
            self._done(claim)
            raise
        try:
            await self._record(claim, job, state, attempts, error)
        except Exception as exc:  # a bug: the lease will lapse and someone retries
            log.exception(
                "failover outcome not recorded; its lease will expire",
                amphora_id=job.amphora_id,
                request=claim.request_id,
                error=one_line(exc),
            )
        finally:
            self._done(claim)

    def _done(self, claim: Claim) -> None:
        self._held.pop(claim.request_id, None)
        if self._uses.pop(claim.request_id, None) is not None and self._retired:
            self._close_unused()
        if not self._held:
            self._idle.set()

    async def _drive(self, claim: Claim, job: FailoverJob) -> tuple[str, int, str | None]:
        """Run the driver; (state to record, attempts, last error)."""
        log.warning(
            "failing over amphora",
            amphora_id=job.amphora_id,
            lb_id=job.load_balancer_id,
            reason=claim.reason,
            request=claim.request_id,
            taken_over_from=claim.taken_over_from,
        )
        self.metrics.count_failover("requested")
        attempts = claim.attempts
        # Attempts are counted when they start: a manager that takes this
        # request over after our death knows an attempt ran.
        await self._progress(claim, attempts + 1, None)

        async def on_attempt(attempt: int, error: Exception | None) -> None:
            nonlocal attempts
            attempts = claim.attempts + attempt
            if error is None:
                return
            if attempt < self.cfg.max_attempts:  # the last failure is "failed", not retried
                self.metrics.count_failover("retried")
                await self._progress(claim, attempts + 1, str(error))

        driver = self._uses[claim.request_id] = self.driver
        try:
            result = await run_with_retries(
                driver,
                job,
                max_attempts=self.cfg.max_attempts,
                backoff=self.cfg.retry_backoff,
                on_attempt=on_attempt,
            )
        except FailoverFailed as exc:
            return C.FAILOVER_FAILED, attempts, str(exc)
        if result is DriverResult.HANDED_OFF:
            return C.FAILOVER_PENDING, attempts, None
        if result is DriverResult.SKIPPED:
            return C.FAILOVER_ABANDONED, attempts, "skipped by the driver: load balancer immutable"
        return C.FAILOVER_SUCCEEDED, max(attempts, 1), None

    async def _progress(self, claim: Claim, attempts: int, error: str | None) -> None:
        try:  # progress is best effort: the outcome carries it too
            await self.db.run(
                self.store.record_progress, claim.request_id, self.cfg.manager_id, attempts, error
            )
        except Exception as exc:
            log.warning("could not record failover progress", error=one_line(exc))

    async def _record(
        self,
        claim: Claim,
        job: FailoverJob,
        state: str,
        attempts: int,
        error: str | None,
        *,
        retry: bool = True,
    ) -> None:
        """Write a known outcome; retry until the database takes it."""
        if not retry:
            try:
                owned = await self.db.run(
                    self.store.record_outcome, claim, self.cfg.manager_id, state, attempts, error
                )
            except Exception as exc:
                log.error(
                    "could not record abandoned failover; its lease will expire",
                    amphora_id=job.amphora_id,
                    error=one_line(exc),
                )
                return
        else:

            def retrying(rs: tenacity.RetryCallState) -> None:
                log.error(
                    "could not record failover outcome; retrying",
                    amphora_id=job.amphora_id,
                    state=state,
                    error=one_line(rs.outcome.exception()),  # type: ignore[union-attr]
                    retry_in=rs.upcoming_sleep,
                )

            owned = await tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception_type(Exception),  # never Cancelled
                wait=tenacity.wait_chain(*map(tenacity.wait_fixed, RECORD_BACKOFF)),
                before_sleep=retrying,
                sleep=trio.sleep,
            )(
                self.db.run,
                self.store.record_outcome,
                claim,
                self.cfg.manager_id,
                state,
                attempts,
                error,
            )
        if not owned:
            log.warning(
                "failover outcome not recorded: another manager took the request over",
                amphora_id=job.amphora_id,
                request=claim.request_id,
                state=state,
            )
            return
        self._announce(claim, job, state, attempts, error)

    def _announce(
        self, claim: Claim, job: FailoverJob, state: str, attempts: int, error: str | None
    ) -> None:
        if state == C.FAILOVER_PENDING:
            self.metrics.count_failover("handed_off")
            log.info(
                "failover requested",
                amphora_id=job.amphora_id,
                request=claim.request_id,
                reason=claim.reason,
            )
        elif state == C.FAILOVER_SUCCEEDED:
            self.metrics.count_failover("succeeded")
            log.warning(
                "failover succeeded",
                amphora_id=job.amphora_id,
                attempts=attempts,
                reason=claim.reason,
            )
        elif state == C.FAILOVER_ABANDONED:
            self.metrics.count_failover("abandoned")
            log.warning(
                "failover skipped; the amphora may be claimed again",
                error=error,
                amphora_id=job.amphora_id,
                lb_id=job.load_balancer_id,
            )
        elif state == C.FAILOVER_FAILED:
            self.metrics.count_failover("failed")
            log.error(
                "failover failed; load balancer set to provisioning_status ERROR",
                amphora_id=job.amphora_id,
                lb_id=job.load_balancer_id,
                attempts=attempts,
                error=error,
                reason=claim.reason,
            )

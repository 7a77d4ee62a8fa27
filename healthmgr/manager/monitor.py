"""The manager watching itself, and telling the other managers.

Two loops, owned by one task:

- every ``TICK`` it samples its senses (the writer's last outcome, the age of
  the oldest database call, the socket's drop counter, its own wake-up lag)
  into :class:`healthmgr.rules.impairment.Impairment`, and logs and counts every
  transition;
- every ``presence_interval`` it writes its row in ``healthmgr_manager``
  (liveness and health, database clock), which is also how it notices a
  database that is back within a second.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import structlog
import trio

from healthmgr import __version__
from healthmgr.db.managers import Presence
from healthmgr.db.store import Store
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.writer import WriterState
from healthmgr.rules.impairment import Change, Impairment, Sample

log = structlog.get_logger("healthmgr.monitor")

TICK = 0.25
FINAL_WRITE_TIMEOUT = 3.0


@dataclass
class CheckState:
    """What the health checker shares with the monitor (trio clock times)."""

    read_failed: bool = False
    last_check: float | None = None
    last_claim: float | None = None
    breaker_open: bool = False
    breaker_reason: str | None = None


class Monitor:
    def __init__(
        self,
        *,
        manager_id: str,
        store: Store,
        db: DbCalls,
        impairment: Impairment,
        writer: WriterState,
        checks: CheckState,
        kernel_drops: Callable[[], int],
        metrics: Metrics,
        presence_interval: float,
    ) -> None:
        self.manager_id = manager_id
        self.store = store
        self.db = db
        self.impairment = impairment
        self.writer = writer
        self.checks = checks
        self.kernel_drops = kernel_drops
        self.metrics = metrics
        self.presence_interval = presence_interval
        self.presence_failed = False
        self.last_presence: float | None = None
        self._first = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample_loop)
            nursery.start_soon(self._presence_loop)
            task_status.started()

    # -- senses ----------------------------------------------------------------

    async def _sample_loop(self) -> None:
        while True:
            woke = trio.current_time() + TICK
            await trio.sleep(TICK)
            now = trio.current_time()
            self.sample(now, loop_lag=max(0.0, now - woke))

    def sample(self, now: float, loop_lag: float = 0.0) -> Change | None:
        s = Sample(
            now=now,
            db_failing=not self.writer.healthy or self.presence_failed,
            db_busy_for=self.db.oldest_age(now),
            db_unreadable=self.checks.read_failed,
            kernel_drops=self.kernel_drops(),
            loop_lag=loop_lag,
        )
        change = self.impairment.update(s)
        self._gauges(now)
        if change is not None:
            self._announce(change, s)
        return change

    def _gauges(self, now: float) -> None:
        commits = [t for t in (self.writer.last_commit, self.last_presence) if t is not None]
        if commits:
            self.metrics.seconds_since_last_commit.set(now - max(commits))
        reachable = self.writer.healthy and not self.presence_failed
        self.metrics.database_reachable.set(1 if reachable else 0)

    def _announce(self, change: Change, s: Sample) -> None:
        self.metrics.set_impaired(change.impaired, change.started)
        if change.impaired:
            log.error(
                "manager impaired: no failover verdict until it has been healthy for "
                "heartbeat_timeout",
                reasons=list(change.reasons),
                started=list(change.started),
                db_busy_for=round(s.db_busy_for, 2),
                loop_lag=round(s.loop_lag, 3),
                writer_error=self.writer.last_error or None,
            )
        else:
            log.warning("manager healthy again; grace period before any failover verdict")

    # -- presence ----------------------------------------------------------------

    async def _presence_loop(self) -> None:
        while True:
            await self.write_presence()
            await trio.sleep(self.presence_interval)

    def presence(self, now: float, *, stopped: bool = False) -> Presence:
        imp, checks = self.impairment, self.checks
        return Presence(
            manager_id=self.manager_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            impaired=imp.impaired,
            impaired_reason=imp.reason(),
            healthy_for=imp.healthy_for(now),
            since_flush=_since(now, self.writer.last_commit),
            since_check=_since(now, checks.last_check),
            since_claim=_since(now, checks.last_claim),
            breaker_open=checks.breaker_open,
            breaker_reason=checks.breaker_reason,
            stopped=stopped,
        )

    async def write_presence(self, *, stopped: bool = False) -> bool:
        now = trio.current_time()
        try:
            await self.db.run(
                partial(self.store.write_presence, first=self._first),
                self.presence(now, stopped=stopped),
            )
        except Exception as exc:
            if not self.presence_failed:
                log.error(
                    "could not write this manager's liveness to the database",
                    error=(str(exc).splitlines() or [type(exc).__name__])[0][:300],
                )
            self.presence_failed = True
            return False
        if self.presence_failed:
            log.warning("liveness written again: the database is reachable")
        self.presence_failed = False
        self._first = False
        self.last_presence = trio.current_time()
        return True

    async def stopped(self) -> None:
        """Shutdown: say so in the row (bounded), so peers know at once."""
        with trio.CancelScope(shield=True), trio.move_on_after(FINAL_WRITE_TIMEOUT):
            await self.write_presence(stopped=True)


def _since(now: float, then: float | None) -> float | None:
    return None if then is None else now - then

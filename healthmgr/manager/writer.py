"""The one database writer: a flush per interval, nothing lost on failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from healthmgr.batch import FlushBatch
from healthmgr.manager.pending import Pending
from healthmgr.manager.view import View
from healthmgr.metrics import Metrics

log = structlog.get_logger("healthmgr.writer")

BACKOFF_MAX = 30.0


@dataclass
class WriterState:
    """What the health checker needs to know about the database's health."""

    healthy: bool = True
    recovered_at: float = field(default_factory=time.monotonic)
    failures: int = 0


class Writer:
    def __init__(
        self,
        view: View,
        flush: Callable[[FlushBatch], object],
        metrics: Metrics,
        *,
        interval: float,
    ) -> None:
        self.view = view
        self._flush = flush
        self.metrics = metrics
        self.interval = interval
        self.state = WriterState()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._delay())
            await self.flush_once()

    def _delay(self) -> float:
        if self.state.failures == 0:
            return self.interval
        return min(BACKOFF_MAX, self.interval * 2 ** min(self.state.failures, 10))

    async def flush_once(self) -> bool:
        """Write what is pending; on failure keep it for the next attempt."""
        taken = self.view.pending
        if not len(taken):
            return True
        # Swap in a fresh buffer here (O(1)); building the batch from the old
        # one happens in the worker thread, off the receive loop.
        self.view.pending = Pending()
        built: list[tuple[FlushBatch, list[float]]] = []

        def build_and_flush() -> None:
            built.append(taken.take())
            self._flush(built[0][0])

        started = time.monotonic()
        try:
            await trio.to_thread.run_sync(build_and_flush)
        except Exception as exc:  # any database error: keep the data, back off
            batch, arrivals = built[0] if built else taken.take()
            self.view.pending.merge_back(batch, arrivals)
            self._failed(exc, len(batch))
            return False
        done = time.monotonic()
        batch, arrivals = built[0]
        self._succeeded(len(batch), done - started, [done - a for a in arrivals])
        return True

    def _failed(self, exc: Exception, size: int) -> None:
        self.state.failures += 1
        self.state.healthy = False
        self.metrics.count_flush_failure()
        log.error(
            "flush failed; keeping pending writes and retrying",
            error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            pending=size,
            attempt=self.state.failures,
            retry_in=round(self._delay(), 2),
        )

    def _succeeded(self, size: int, duration: float, lags: list[float]) -> None:
        if not self.state.healthy:
            log.warning("database is back; pending writes flushed", after=self.state.failures)
            self.state.recovered_at = time.monotonic()
        self.state.healthy = True
        self.state.failures = 0
        self.metrics.observe_flush(duration, size)
        self.metrics.observe_commit_lags(lags)

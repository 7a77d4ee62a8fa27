"""The one database writer: a flush per interval, nothing lost on failure.

A flush that fails for a transient reason (connection, lock or statement
timeout, deadlock) keeps its rows, merged under anything newer, and is retried
with a short backoff. Rows the database refuses for their data never come back
as an error: the store isolates them, and they are quarantined here (logged
and counted); the rest of the batch lands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trio

from healthmgr.db.errors import DATABASE_ERRORS, diagnose
from healthmgr.db.flush import FlushStats
from healthmgr.logging import one_line
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.flush_process import FlushFailed
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.pending import Pending
from healthmgr.manager.quarantine import Quarantine
from healthmgr.manager.view import View
from healthmgr.rules.batch import FlushBatch, RefusedRow
from healthmgr.wire.ids import id_str

log = structlog.get_logger("healthmgr.writer")

# Backoff after failed flushes: flush_interval * 2**n, at most this, so that a
# database that is back is noticed within about a second.
BACKOFF_MAX = 1.0


@dataclass
class WriterState:
    """What the impairment monitor needs to know of the writer (trio clock times)."""

    healthy: bool = True
    failures: int = 0
    last_error: str = ""
    last_commit: float | None = None  # end of the last successful flush
    recovered_at: float = float("-inf")  # the last flush that followed failures


class Writer:
    def __init__(
        self,
        view: View,
        flush: Callable[[FlushBatch], FlushStats],
        metrics: Metrics,
        *,
        interval: float,
        quarantine: Quarantine | None = None,
        db: DbCalls | None = None,
    ) -> None:
        self.db = db or DbCalls()
        self.view = view
        self._flush = flush
        self.metrics = metrics
        self.interval = interval
        self.quarantine = quarantine or Quarantine(metrics)
        self.state = WriterState()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        took = 0.0
        while True:
            await trio.sleep(self._delay(took))
            started = trio.current_time()
            await self.flush_once()
            took = trio.current_time() - started

    def _delay(self, took: float = 0.0) -> float:
        """Flushes start every interval; one that took longer is followed at once.

        At high rates the batch then grows with the flush time (bigger
        batches, fewer statements and commits per heartbeat) instead of
        waiting an interval more: arrival to commit stays within two flush
        times.
        """
        if self.state.failures == 0:
            return max(0.0, self.interval - took)
        return min(BACKOFF_MAX, self.interval * 2 ** min(self.state.failures, 10))

    async def flush_once(self) -> bool:
        """Write what is pending; on a transient failure keep it for the next attempt."""
        taken = self.view.pending
        if not len(taken):
            return self.state.healthy
        # Swap in a fresh buffer here (O(1)); building the batch from the old
        # one happens in the worker thread, off the receive loop.
        self.view.pending = Pending()
        built: list[tuple[FlushBatch, list[float]]] = []
        result: list[FlushStats] = []

        def build_and_flush() -> None:
            built.append(taken.take())
            result.append(self._flush(built[0][0]))

        try:
            await self.db.run(build_and_flush)
        except Exception as exc:
            batch, arrivals = built[0] if built else taken.take()
            if _is_bug(exc):
                self._dropped(exc, batch)
                return False
            self.view.pending.merge_back(batch, arrivals)
            self._failed(exc, len(batch))
            return False
        batch, arrivals = built[0]
        done = time.monotonic()
        self._succeeded(result[0], len(batch), [done - a for a in arrivals])
        return True

    def _failed(self, exc: Exception, size: int) -> None:
        self.state.failures += 1
        self.state.healthy = False
        self.state.last_error = one_line(exc)
        self.metrics.count_flush_failure()
        log.error(
            "flush failed; keeping pending writes and retrying",
            error=self.state.last_error,
            kind=_kind(exc),
            pending=size,
            attempt=self.state.failures,
            retry_in=round(self._delay(), 2),
        )

    def _dropped(self, exc: Exception, batch: FlushBatch) -> None:
        """Not a database error: a bug. Retrying would wedge every later flush."""
        log.exception(
            "flush failed on an internal error; the batch is dropped",
            rows=len(batch),
            error=one_line(exc),
        )
        rows = [
            RefusedRow(
                "amphora_health",
                id_str(b.amphora_id),
                id_str(b.amphora_id),
                "internal_error",
                one_line(exc),
            )
            for b in batch.health
        ]
        self.quarantine.refused(rows)

    def _succeeded(self, stats: FlushStats, size: int, lags: list[float]) -> None:
        if not self.state.healthy:
            log.warning("database is back; pending writes flushed", after=self.state.failures)
            self.state.recovered_at = trio.current_time()
        self.state.healthy = True
        self.state.failures = 0
        self.state.last_commit = trio.current_time()
        if stats.refused:
            self.quarantine.refused(stats.refused)
        for amphora in stats.recovered:
            log.info(
                "amphora beats again: FAILOVER_STOPPED -> ALLOCATED", amphora_id=id_str(amphora)
            )
        self.metrics.observe_flush(stats.seconds, size)
        self.metrics.observe_commit_lags(lags)


def _is_bug(exc: Exception) -> bool:
    return not isinstance(exc, (*DATABASE_ERRORS, FlushFailed))


def _kind(exc: Exception) -> str:
    """The error's class; a writer process's failure carries the child's diagnosis."""
    return str(exc.kind) if isinstance(exc, FlushFailed) else diagnose(exc).error_class.value

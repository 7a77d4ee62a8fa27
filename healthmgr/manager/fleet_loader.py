"""Keeps the decoder's :class:`Fleet` in step with the database.

Every ``interval`` seconds one query (``Store.load_fleet``) in a worker thread,
bounded by ``timeout``. A failure is logged (once when it starts, then at most
every ``LOG_EVERY`` seconds, and once on recovery) and never fatal: the decoder
keeps the last fleet it had, or, before the first load, filters nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from healthmgr.manager.fleet import Fleet
from healthmgr.wire.ids import Id

log = structlog.get_logger("healthmgr.fleet")

LOG_EVERY = 60.0

Load = Callable[[], tuple[set[Id], set[Id]]]


class FleetLoader:
    def __init__(
        self, load: Load, fleet: Fleet, *, interval: float, timeout: float | None = None
    ) -> None:
        self.load = load
        self.fleet = fleet
        self.interval = interval
        self.timeout = timeout if timeout is not None else max(interval, 5.0)
        self.failures = 0
        self._logged_at = -LOG_EVERY

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.load_once()
            await trio.sleep(self.interval)

    async def load_once(self) -> bool:
        """One load; True when the fleet was replaced."""
        error = "timed out"
        with trio.move_on_after(self.timeout):
            try:
                # A stuck query cannot be cancelled, only left behind; its
                # result is then dropped (the next load starts afresh).
                known, native = await trio.to_thread.run_sync(self.load, abandon_on_cancel=True)
            except Exception as exc:
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            else:
                self._loaded(len(known), len(native))
                self.fleet.replace(known, native)
                return True
        self._failed(error)
        return False

    def _loaded(self, known: int, native: int) -> None:
        if self.failures or not self.fleet.loaded:
            log.info("fleet loaded", amphorae=known, native=native, failures=self.failures)
        self.failures = 0

    def _failed(self, error: str) -> None:
        self.failures += 1
        now = trio.current_time()
        if self.failures == 1 or now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning(
                "fleet load failed; keeping the last fleet",
                error=error,
                failures=self.failures,
                amphorae=len(self.fleet),
                loaded=self.fleet.loaded,
            )

"""Loads topology for the view in batches: new amphorae, TTL expiry, forced refreshes."""

from __future__ import annotations

import time

import structlog
import trio

from healthmgr.db.store import Store
from healthmgr.manager.ingest import Ingest
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.quarantine import Quarantine

log = structlog.get_logger("healthmgr.refresher")

BATCH = 5000
TTL_SCAN_EVERY = 1.0
# TTL re-reads are spread over the TTL (plus this margin), never all at once:
# a topology load costs the GIL far more than a heartbeat does.
TTL_SPREAD = 1.25
MIN_TTL_BUDGET = 50


class Refresher:
    def __init__(
        self, store: Store, ingest: Ingest, metrics: Metrics, quarantine: Quarantine | None = None
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.view = ingest.view
        self.metrics = metrics
        self.quarantine = quarantine or Quarantine(metrics)
        self._wake = trio.Event()

    def poke(self) -> None:
        """Called after each receive burst: wake up if the view wants something."""
        if self.view.has_wanted():
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(TTL_SCAN_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.refresh_once()

    def _ttl_budget(self) -> int:
        """Expired entries to re-read per scan: the whole cache once per TTL."""
        per_scan = self.view.tracked() * TTL_SCAN_EVERY * TTL_SPREAD / self.view.ttl
        return max(MIN_TTL_BUDGET, int(per_scan))

    async def refresh_once(self) -> None:
        now = time.monotonic()
        ids = self.view.wanted(BATCH)
        ids += self.view.expired(now, min(BATCH - len(ids), self._ttl_budget()))
        if not ids:
            return
        try:
            loaded = await trio.to_thread.run_sync(self.store.load_topologies, ids)
        except Exception as exc:  # database down: ask again next round
            log.error("topology load failed", error=str(exc).splitlines()[0], amphorae=len(ids))
            self.view.want_again(ids)
            return
        if loaded.refused:
            self.quarantine.refused(loaded.refused, event="unreadable row left out of a topology")
        self.metrics.count_topology_refresh(len(ids))
        released = self.view.install(ids, loaded.found, time.monotonic())
        self.ingest.release(released, time.monotonic())
        self.ingest.publish()

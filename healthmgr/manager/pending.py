"""What the view has decided but the writer has not committed yet.

Heartbeats between two flushes collapse here: one ``last_update`` per
amphora, its newest report (what its newest heartbeat determined), coalesced
statistics. A flush takes everything at once; a failed flush merges its batch
back under anything newer.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from healthmgr.rules.batch import (
    FlushBatch,
    HealthBump,
    PackedStatuses,
    ReportWrite,
)
from healthmgr.rules.stats import StatsAccumulator
from healthmgr.wire.ids import Id
from healthmgr.wire.values import Heartbeat

_EPOCH = dt.datetime(1970, 1, 1)
_MS = dt.timedelta(milliseconds=1)


def utc_from_ms(ms: int) -> dt.datetime:
    """Naive UTC datetime, the form the database columns hold."""
    return _EPOCH + ms * _MS


def ms_from_utc(value: dt.datetime) -> int:
    return (value - _EPOCH) // _MS


class Report(NamedTuple):
    """A report held until the flush (a tuple: one per newest heartbeat)."""

    order: int
    digest: int
    statuses: PackedStatuses  # rules.batch.pack_statuses: unpacked where written
    alive_ms: int
    healthy: bool
    native: bool
    cache_differs: bool = False


class Pending:
    __slots__ = ("_health", "_reports", "_stats", "arrivals")

    def __init__(self) -> None:
        self._health: dict[Id, int] = {}
        self._reports: dict[Id, Report] = {}
        self._stats = StatsAccumulator()
        # Arrival times (monotonic) of what this flush reflects: commit lag.
        self.arrivals: list[float] = []

    def bump(self, amphora_id: Id, at_ms: int) -> None:
        if at_ms > self._health.get(amphora_id, -1):
            self._health[amphora_id] = at_ms

    def report(self, amphora_id: Id, report: Report) -> None:
        held = self._reports.get(amphora_id)
        if held is None or report.order > held.order:
            if held is not None and held.cache_differs and not report.cache_differs:
                report = report._replace(cache_differs=True)  # still to be written
            self._reports[amphora_id] = report

    def stats(self, hb: Heartbeat) -> None:
        self._stats.add(hb)

    def __len__(self) -> int:
        return len(self._health) + len(self._reports) + len(self._stats)

    def take(self) -> tuple[FlushBatch, list[float]]:
        """Everything pending as one batch; the buffer starts empty again."""
        batch = FlushBatch(
            health=tuple(HealthBump(a, utc_from_ms(ms)) for a, ms in self._health.items()),
            reports=tuple(
                ReportWrite(
                    a,
                    r.order,
                    r.digest,
                    r.statuses,
                    utc_from_ms(r.alive_ms),
                    r.healthy,
                    r.native,
                    r.cache_differs,
                )
                for a, r in self._reports.items()
            ),
            stats=self._stats.drain(),
        )
        arrivals = self.arrivals
        self._health = {}
        self._reports = {}
        self.arrivals = []
        return batch, arrivals

    def merge_back(self, batch: FlushBatch, arrivals: list[float]) -> None:
        """Re-queue a batch whose flush failed; newer pending values win."""
        for bump in batch.health:
            self.bump(bump.amphora_id, ms_from_utc(bump.last_update))
        for r in batch.reports:
            self.report(
                r.amphora_id,
                Report(
                    r.order,
                    r.digest,
                    r.statuses,
                    ms_from_utc(r.observed_at),
                    r.healthy,
                    r.native,
                    r.cache_differs,
                ),
            )
        self._stats.merge_back(batch.stats)
        self.arrivals = arrivals + self.arrivals

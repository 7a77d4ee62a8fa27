"""What the view has decided but the writer has not committed yet.

Heartbeats between two flushes collapse here: one ``last_update`` per
amphora, the latest status per object, coalesced statistics. A flush takes
everything at once; a failed flush merges its batch back under anything newer.
"""

from __future__ import annotations

import datetime as dt

from healthmgr.batch import FlushBatch, HealthBump, StatusWrite
from healthmgr.stats import StatsAccumulator
from healthmgr.wire.values import Heartbeat, Id

_EPOCH = dt.datetime(1970, 1, 1)
_MS = dt.timedelta(milliseconds=1)


def utc_from_ms(ms: int) -> dt.datetime:
    """Naive UTC datetime, the form the database columns hold."""
    return _EPOCH + ms * _MS


def ms_from_utc(value: dt.datetime) -> int:
    return (value - _EPOCH) // _MS


class Pending:
    __slots__ = ("_health", "_stats", "_statuses", "arrivals")

    def __init__(self) -> None:
        self._health: dict[Id, int] = {}
        self._statuses: dict[tuple[str, Id], str] = {}
        self._stats = StatsAccumulator()
        # Arrival times (monotonic) of what this flush reflects: commit lag.
        self.arrivals: list[float] = []

    def bump(self, amphora_id: Id, at_ms: int) -> None:
        if at_ms > self._health.get(amphora_id, -1):
            self._health[amphora_id] = at_ms

    def status(self, write: StatusWrite) -> None:
        self._statuses[(write.table, write.id)] = write.operating_status

    def stats(self, hb: Heartbeat) -> None:
        self._stats.add(hb)

    def __len__(self) -> int:
        return len(self._health) + len(self._statuses) + len(self._stats)

    def take(self) -> tuple[FlushBatch, list[float]]:
        """Everything pending as one batch; the buffer starts empty again."""
        batch = FlushBatch(
            health=tuple(HealthBump(a, utc_from_ms(ms)) for a, ms in self._health.items()),
            statuses=tuple(StatusWrite(t, i, s) for (t, i), s in self._statuses.items()),
            stats=self._stats.drain(),
        )
        arrivals = self.arrivals
        self._health = {}
        self._statuses = {}
        self.arrivals = []
        return batch, arrivals

    def merge_back(self, batch: FlushBatch, arrivals: list[float]) -> None:
        """Re-queue a batch whose flush failed; newer pending values win."""
        for bump in batch.health:
            self.bump(bump.amphora_id, ms_from_utc(bump.last_update))
        for write in batch.statuses:
            self._statuses.setdefault((write.table, write.id), write.operating_status)
        self._stats.merge_back(batch.stats)
        self.arrivals = arrivals + self.arrivals

"""What one flush writes: plain values from the manager's view to the store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from healthmgr.wire.values import Id

STATUS_TABLES = ("load_balancer", "listener", "pool", "member")


@dataclass(frozen=True, slots=True)
class HealthBump:
    """Refresh ``amphora_health.last_update`` (inserting the row if missing).

    Only moves forward: a bump older than the stored value is a no-op, so
    managers that flush out of order never move an amphora back in time. An
    amphora in FAILOVER_STOPPED returns to ALLOCATED.
    """

    amphora_id: Id
    last_update: dt.datetime  # naive UTC


@dataclass(frozen=True, slots=True)
class StatusWrite:
    table: str  # one of STATUS_TABLES
    id: Id
    operating_status: str


@dataclass(frozen=True, slots=True)
class StatsUpdate:
    """One heartbeat's counters for one listener on one amphora.

    Absolute counters (``is_delta`` False) are applied only when ``seq`` is
    newer than the row's ``last_seq``: the delta is ``value - last_value``
    under the same ``epoch``, or ``value`` after an epoch change. Updates for
    one row are applied in ``seq`` order.
    """

    listener_id: Id
    amphora_id: Id
    seq: int
    epoch: int
    active_connections: int
    bytes_in: int
    bytes_out: int
    total_connections: int
    request_errors: int
    is_delta: bool = False


@dataclass(frozen=True, slots=True)
class FlushBatch:
    health: tuple[HealthBump, ...] = ()
    statuses: tuple[StatusWrite, ...] = ()
    stats: tuple[StatsUpdate, ...] = ()
    meta: dict[str, int] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.health) + len(self.statuses) + len(self.stats)

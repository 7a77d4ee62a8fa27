"""What one flush writes: plain values from the manager's view to the store.

The flush path: the rules (:mod:`healthmgr.rules.status`, :mod:`healthmgr.rules.stats`)
produce these values; :mod:`healthmgr.manager.pending` holds them between two
flushes; :mod:`healthmgr.manager.writer` hands a batch to
:meth:`healthmgr.db.store.Store.flush`, which writes it with
:mod:`healthmgr.db.flush` in one transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import msgspec

from healthmgr.rules.constants import OPERATING_STATUSES
from healthmgr.wire.ids import Id

STATUS_TABLES = ("load_balancer", "listener", "pool", "member")


class HealthBump(msgspec.Struct, frozen=True, gc=False):
    """Refresh ``amphora_health.last_update`` (inserting the row if missing).

    Only moves forward: a bump older than the stored value is a no-op, so
    managers that flush out of order never move an amphora back in time. An
    amphora in FAILOVER_STOPPED returns to ALLOCATED.
    """

    amphora_id: Id
    last_update: dt.datetime  # naive UTC


class StatusWrite(msgspec.Struct, frozen=True, gc=False):
    table: str  # one of STATUS_TABLES
    id: Id
    operating_status: str


PackedStatuses = bytes | tuple[StatusWrite, ...]  # a tuple: what does not pack (never today)


class ReportWrite(msgspec.Struct, frozen=True, gc=False):
    """The newest heartbeat of one amphora this manager processed, and what it determined.

    This and the two values above are frozen msgspec Structs, for the reason
    given under :class:`StatsUpdate`: a flush builds one or two per amphora.

    The store keeps one row per amphora (``healthmgr_amphora``) with the
    ``order`` and ``digest`` of the newest heartbeat any manager processed.
    This one is written only when it is newer than that row, and its
    ``statuses`` only when, in addition, the digest differs: newest wins across
    managers, and a manager whose cache is behind still corrects the database.
    """

    amphora_id: Id
    order: int  # recency: the native seq, or an Octavia heartbeat's arrival in ms
    digest: int  # status.digest(statuses)
    # Every status the heartbeat determined, packed (pack_statuses): unpacked
    # only for the reports whose statuses are written (unpack_statuses).
    statuses: PackedStatuses
    observed_at: dt.datetime  # naive UTC: the time it proves the amphora alive
    healthy: bool  # the listener-count verdict
    native: bool  # sent in the native format
    # The manager's cache (the database as last read, plus its own writes)
    # shows other statuses: write them even if the digest in the database
    # matches (someone else, e.g. the API, changed them).
    cache_differs: bool = False


class StatsUpdate(msgspec.Struct, frozen=True, gc=False):
    """One heartbeat's counters for one listener on one amphora.

    A frozen msgspec Struct, not a dataclass: the receive path builds one per
    listener per heartbeat, and a frozen dataclass's ``__init__`` (a
    ``object.__setattr__`` per field) cost 16,000 instructions of it
    (docs/performance.md, "Receive path and memory").

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
class RefusedRow:
    """A row the database refused, or returned in a shape we cannot read.

    Quarantined: left out so that the rest of its batch lands, logged
    (rate-limited) and counted in ``healthmgr_rows_rejected_total``.
    """

    table: str
    key: str  # the row's id as text (or "listener/amphora" for statistics)
    amphora_id: str | None  # the amphora it came from or belongs to, when known
    reason: str  # short label for the metric: out_of_range, constraint, unreadable, ...
    detail: str = ""  # one line for the log


@dataclass(frozen=True, slots=True)
class FlushBatch:
    health: tuple[HealthBump, ...] = ()
    reports: tuple[ReportWrite, ...] = ()
    stats: tuple[StatsUpdate, ...] = ()
    meta: dict[str, int] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.health) + len(self.reports) + len(self.stats)


# -- statuses held per amphora -------------------------------------------------
# The view keeps every amphora's last determined statuses (the steady state
# reuses them) and pending holds them until the flush. As StatusWrite objects a
# seed amphora's five cost about 650 bytes (a tuple, five objects, their ids);
# packed, one bytes object of 18 bytes per status: table code, status code,
# id. A flush unpacks only those it writes (the steady state: none).
_ID_BYTES = 16
_PACKED_BYTES = 2 + _ID_BYTES
_TABLE_CODE = {table: code for code, table in enumerate(STATUS_TABLES)}
_STATUS_CODE = {status: code for code, status in enumerate(OPERATING_STATUSES)}


def pack_statuses(writes: tuple[StatusWrite, ...]) -> PackedStatuses:
    """``writes`` in 18 bytes each; the tuple itself if one of them has no code."""
    if any(len(w.id) != _ID_BYTES for w in writes):
        return writes
    try:
        return b"".join(
            bytes((_TABLE_CODE[w.table], _STATUS_CODE[w.operating_status])) + w.id for w in writes
        )
    except KeyError:
        return writes


def unpack_statuses(packed: PackedStatuses) -> tuple[StatusWrite, ...]:
    """The inverse of :func:`pack_statuses`."""
    if type(packed) is tuple:
        return packed
    tables, statuses = STATUS_TABLES, OPERATING_STATUSES
    return tuple(
        StatusWrite(tables[packed[i]], packed[i + 2 : i + _PACKED_BYTES], statuses[packed[i + 1]])
        for i in range(0, len(packed), _PACKED_BYTES)
    )

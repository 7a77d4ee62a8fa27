"""The in-memory heartbeat value both wire formats decode into.

Ids are the 16 raw bytes of a UUID: cheap to hash and compare on the hot path;
convert with :func:`healthmgr.wire.ids.id_str` / ``id_bytes`` at the database edge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from healthmgr.wire.ids import Id


class WireFormat(enum.IntEnum):
    NATIVE = 1
    OCTAVIA = 2


class ListenerState(enum.IntEnum):
    """HAProxy frontend status as the agent reports it."""

    OTHER = 0  # anything the agent could not map: status left unchanged
    OPEN = 1
    FULL = 2
    STOP = 3


class PoolState(enum.IntEnum):
    """HAProxy backend status."""

    OTHER = 0
    UP = 1
    DOWN = 2


class MemberState(enum.IntEnum):
    """HAProxy server status, normalised by the agent.

    Transitional states keep their direction: ``UP 1/3`` is UP, ``DOWN 1/2``
    is DOWN. ``UP`` with weight 0 is DRAIN.
    """

    OTHER = 0
    UP = 1
    DOWN = 2
    DRAIN = 3
    MAINT = 4
    NO_CHECK = 5


@dataclass(frozen=True, slots=True)
class ListenerReport:
    id: Id
    status: ListenerState
    current_connections: int
    # Absolute counters since the HAProxy process started (see counters_epoch).
    bytes_in: int
    bytes_out: int
    total_connections: int
    request_errors: int


@dataclass(frozen=True, slots=True)
class MemberReport:
    id: Id
    status: MemberState


@dataclass(frozen=True, slots=True)
class PoolReport:
    id: Id
    listener_id: Id | None  # None when the sender did not say (Octavia v1/v2)
    status: PoolState
    members: tuple[MemberReport, ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    amphora_id: Id
    seq: int
    sent_at_ms: int  # sender's wall clock, Unix epoch milliseconds
    interval_ms: int  # sender's heartbeat interval
    # Changes whenever HAProxy's counters restart from zero (restart, reload).
    counters_epoch: int
    listeners: tuple[ListenerReport, ...]
    pools: tuple[PoolReport, ...]
    format: WireFormat = WireFormat.NATIVE
    # Octavia's message version 3 sends per-message deltas instead of absolute
    # counters; the native format and Octavia v1/v2 send absolute values.
    counters_are_deltas: bool = False

"""The in-memory heartbeat value both wire formats decode into.

Ids are the 16 raw bytes of a UUID: cheap to hash and compare on the hot path;
convert with :func:`healthmgr.wire.ids.id_str` / ``id_bytes`` at the database edge.

The values are frozen msgspec Structs, and their fields carry the native
format's bounds (``Meta``): ``payload.py`` decodes a datagram straight into
them in C (validation included), which cost a third of the manager's receive
path when it was Python (docs/performance.md, "Receive path and memory").
Constructors do not validate (the Octavia decoder and the agent build values
themselves); ``msgspec.structs.replace`` is their ``dataclasses.replace``.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec
from msgspec import Meta

# Re-exported for branches written before healthmgr.wire.ids; import from there.
from healthmgr.wire.ids import Id
from healthmgr.wire.limits import (
    ID_BYTES,
    MAX_MEMBERS_PER_POOL,
    MAX_STATUS_CODE,
)

# The wire's types (checked when decoding, not when constructing).
WireId = Annotated[Id, Meta(min_length=ID_BYTES, max_length=ID_BYTES)]
Uint = Annotated[int, Meta(ge=0)]  # msgpack holds no integer beyond uint64


class _Codes(enum.IntEnum):
    """A status code this version does not know (any uint8) is OTHER: the
    status is left unchanged (schema/heartbeat.md). Codes beyond uint8 are
    still a ValueError, and a malformed heartbeat."""

    @classmethod
    def _missing_(cls, value: object) -> _Codes | None:
        if type(value) is int and 0 <= value <= MAX_STATUS_CODE:
            return cls(0)
        return None


class WireFormat(enum.IntEnum):
    NATIVE = 1
    OCTAVIA = 2


class ListenerState(_Codes):
    """HAProxy frontend status as the agent reports it."""

    OTHER = 0  # anything the agent could not map: status left unchanged
    OPEN = 1
    FULL = 2
    STOP = 3


class PoolState(_Codes):
    """HAProxy backend status."""

    OTHER = 0
    UP = 1
    DOWN = 2


class MemberState(_Codes):
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


class _Value(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """Immutable, hashable, positional on the wire; no cycles, so untracked by the GC."""


class ListenerReport(_Value):
    id: WireId
    status: ListenerState
    current_connections: Uint
    # Absolute counters since the HAProxy process started (see counters_epoch).
    bytes_in: Uint
    bytes_out: Uint
    total_connections: Uint
    request_errors: Uint


class MemberReport(_Value):
    id: WireId
    status: MemberState


class PoolReport(_Value):
    id: WireId
    listener_id: WireId | None  # None when the sender did not say (Octavia v1/v2)
    status: PoolState
    members: Annotated[tuple[MemberReport, ...], Meta(max_length=MAX_MEMBERS_PER_POOL)]


class Heartbeat(_Value):
    amphora_id: WireId
    seq: Uint
    sent_at_ms: Uint  # sender's wall clock, Unix epoch milliseconds
    interval_ms: Uint  # sender's heartbeat interval
    # Changes whenever HAProxy's counters restart from zero (restart, reload).
    counters_epoch: Uint
    listeners: tuple[ListenerReport, ...]
    pools: tuple[PoolReport, ...]
    format: WireFormat = WireFormat.NATIVE
    # Octavia's message version 3 sends per-message deltas instead of absolute
    # counters; the native format and Octavia v1/v2 send absolute values.
    counters_are_deltas: bool = False

"""The native payload: a heartbeat as positional msgpack arrays (layout 1).

    payload  = [amphora_id, seq, sent_at_ms, interval_ms, counters_epoch, listeners, pools]
    listener = [id, status, current_connections, bytes_in, bytes_out,
                total_connections, request_errors]
    pool     = [id, listener_id, status, members]
    member   = [id, status]

Ids are 16-byte bin, statuses uint8 codes (the IntEnum values of values.py),
everything else an unsigned integer. Decoding is strict (schema/heartbeat.md,
"Validation"): msgspec parses, type-checks, bounds-checks and builds the
values in one pass in C (the value classes' fields carry the bounds); Python
then checks only what a schema cannot say (the header's amphora id, the
total of members, duplicate ids, a pool's listener id). This runs for every
datagram the manager receives.
"""

from __future__ import annotations

import operator
import re
from typing import Annotated

import msgpack
import msgspec
from msgspec import Meta

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.limits import (
    MAX_ARRAY_LEN,
    MAX_INTERVAL_MS,
    MAX_LISTENERS,
    MAX_MEMBERS,
    MAX_MEMBERS_PER_POOL,
    MAX_POOLS,
    MIN_INTERVAL_MS,
)
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    MemberReport,
    PoolReport,
    Uint,
    WireFormat,
    WireId,
)


class _Payload(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """The payload array exactly (``Heartbeat`` has two more fields, not on the wire)."""

    amphora_id: WireId
    seq: Uint
    sent_at_ms: Uint
    interval_ms: Annotated[int, Meta(ge=MIN_INTERVAL_MS, le=MAX_INTERVAL_MS)]
    counters_epoch: Uint
    listeners: Annotated[tuple[ListenerReport, ...], Meta(max_length=MAX_LISTENERS)]
    pools: Annotated[tuple[PoolReport, ...], Meta(max_length=MAX_POOLS)]


_decode = msgspec.msgpack.Decoder(_Payload).decode
_errors = (msgspec.ValidationError, msgspec.DecodeError)
# An array longer than a count limit (or than any array of the layout) is
# over_limit, as msgpack's max_array_len made it before; everything else malformed.
_ARRAY_LENGTH = re.compile(r"Expected `array` of (length <= \d+|at most length \d+, got (\d+))")
_first = operator.attrgetter("id")
_pool_key = operator.attrgetter("id", "listener_id")
_members = operator.attrgetter("members")
_listener_id = operator.attrgetter("listener_id")
_POOLS_ALWAYS_WITHIN = MAX_MEMBERS // MAX_MEMBERS_PER_POOL  # so many pools cannot exceed it
_NATIVE = WireFormat.NATIVE
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _malformed(detail: str) -> Rejected:
    return Rejected(Reason.MALFORMED, detail)


def pack_payload(hb: Heartbeat) -> bytes:
    """The payload bytes of ``hb`` (not validated here; see native.encode_native)."""
    try:
        return _packb(
            (
                hb.amphora_id,
                hb.seq,
                hb.sent_at_ms,
                hb.interval_ms,
                hb.counters_epoch,
                tuple(
                    (
                        lis.id,
                        int(lis.status),
                        lis.current_connections,
                        lis.bytes_in,
                        lis.bytes_out,
                        lis.total_connections,
                        lis.request_errors,
                    )
                    for lis in hb.listeners
                ),
                tuple(
                    (
                        pool.id,
                        pool.listener_id,
                        int(pool.status),
                        tuple((m.id, int(m.status)) for m in pool.members),
                    )
                    for pool in hb.pools
                ),
            )
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"heartbeat cannot be encoded: {exc}") from None


def unpack_payload(data: bytes, amphora_id: bytes) -> Heartbeat:
    """Parse and validate a payload whose envelope named ``amphora_id``."""
    try:
        p = _decode(data)
    except _errors as exc:
        raise _rejected(str(exc)) from None
    except Exception as exc:  # defensive: nothing but Rejected leaves the decoder
        raise _malformed(f"msgpack: {type(exc).__name__}") from None
    if p.amphora_id != amphora_id:
        raise _malformed("payload amphora id differs from the header's")
    listeners, pools = p.listeners, p.pools
    if len(listeners) > 1 and len(frozenset(map(_first, listeners))) != len(listeners):
        raise _malformed("a listener id appears twice")
    if pools:
        _check_pools(pools)
    return Heartbeat(
        amphora_id,
        p.seq,
        p.sent_at_ms,
        p.interval_ms,
        p.counters_epoch,
        listeners,
        pools,
        _NATIVE,
        False,
    )


def _check_pools(pools: tuple[PoolReport, ...]) -> None:
    """What the schema cannot say: each pool names its listener, no id twice, and
    the members of all pools together stay within MAX_MEMBERS. C-level loops
    (map, frozenset); the failing pool's index is found only on failure."""
    if len(pools) == 1:  # the common case, without the loops' overhead
        pool = pools[0]
        members = pool.members
        count = len(members)
        if pool.listener_id is not None and (
            count < 2
            or (members[0].id != members[1].id if count == 2 else _distinct(members, count))
        ):
            return
    if len(pools) > _POOLS_ALWAYS_WITHIN and sum(map(len, map(_members, pools))) > MAX_MEMBERS:
        raise Rejected(Reason.OVER_LIMIT, f"more than {MAX_MEMBERS} members")
    if None in map(_listener_id, pools):
        i = [p.listener_id for p in pools].index(None)
        raise _malformed(f"pool {i}: listener id is not a 16-byte binary")
    for i, members in enumerate(map(_members, pools)):
        if len(members) > 1 and len(frozenset(map(_first, members))) != len(members):
            raise _malformed(f"pool {i}: a member id appears twice")
    if len(pools) > 1 and len(frozenset(map(_pool_key, pools))) != len(pools):
        raise _malformed("a (pool id, listener id) pair appears twice")


def _distinct(reports: tuple[MemberReport, ...], count: int) -> bool:
    return len(frozenset(map(_first, reports))) == count


def _rejected(message: str) -> Rejected:
    """msgspec's error as the spec's reason (off the hot path)."""
    match = _ARRAY_LENGTH.search(message)
    if match and (match.group(2) is None or int(match.group(2)) > MAX_ARRAY_LEN):
        return Rejected(Reason.OVER_LIMIT, f"msgpack: {message}")
    return _malformed(f"msgpack: {message}")

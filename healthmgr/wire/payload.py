"""The native payload: a heartbeat as positional msgpack arrays (layout 1).

    payload  = [amphora_id, seq, sent_at_ms, interval_ms, counters_epoch, listeners, pools]
    listener = [id, status, current_connections, bytes_in, bytes_out,
                total_connections, request_errors]
    pool     = [id, listener_id, status, members]
    member   = [id, status]

Ids are 16-byte bin, statuses uint8 codes (the IntEnum values of values.py),
everything else an unsigned integer. Decoding is strict (schema/heartbeat.md,
"Validation") and costs one pass with no per-field function calls: this runs
for every datagram the manager receives.
"""

from __future__ import annotations

import operator
from typing import Any

import msgpack

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.limits import (
    ID_BYTES,
    MAX_ARRAY_LEN,
    MAX_INTERVAL_MS,
    MAX_LISTENERS,
    MAX_MEMBERS,
    MAX_MEMBERS_PER_POOL,
    MAX_POOLS,
    MAX_STATUS_CODE,
    MAX_STRING_BYTES,
    MIN_INTERVAL_MS,
)
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
    WireFormat,
)

_UNPACK_LIMITS: dict[str, Any] = {
    "use_list": False,
    "raw": False,
    "strict_map_key": True,
    "max_bin_len": ID_BYTES,
    "max_str_len": MAX_STRING_BYTES,
    "max_array_len": MAX_ARRAY_LEN,
    "max_map_len": 0,
    "max_ext_len": 0,
}
_unpackb = msgpack.unpackb
_first = operator.itemgetter(0)
_pool_key = operator.itemgetter(0, 1)
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _code_table(enum: Any) -> tuple[Any, ...]:
    """Code -> member for every uint8; codes this version does not know -> OTHER."""
    known = {member.value: member for member in enum}
    return tuple(known.get(code, enum.OTHER) for code in range(MAX_STATUS_CODE + 1))


_LISTENER_STATES: tuple[ListenerState, ...] = _code_table(ListenerState)
_POOL_STATES: tuple[PoolState, ...] = _code_table(PoolState)
_MEMBER_STATES: tuple[MemberState, ...] = _code_table(MemberState)


# -- constructors ----------------------------------------------------------
# The value classes are frozen slotted dataclasses; their generated __init__
# goes through object.__setattr__ once per field, which made up half the cost
# of decoding a seed heartbeat. These fill the slots directly: same objects
# (tests/wire/test_native_payload.py compares them with the real constructors),
# valid because values.py defines no __post_init__ or validation in __init__.
_new = object.__new__


def _setters(cls: type) -> tuple[Any, ...]:
    return tuple(getattr(cls, name).__set__ for name in cls.__slots__)


_H = _setters(Heartbeat)
_L = _setters(ListenerReport)
_P = _setters(PoolReport)
_M = _setters(MemberReport)
_NATIVE = WireFormat.NATIVE


def _heartbeat(
    amphora_id: bytes, seq: int, sent_at: int, interval: int, epoch: int,
    listeners: tuple[ListenerReport, ...], pools: tuple[PoolReport, ...],
    s0: Any = _H[0], s1: Any = _H[1], s2: Any = _H[2], s3: Any = _H[3], s4: Any = _H[4],
    s5: Any = _H[5], s6: Any = _H[6], s7: Any = _H[7], s8: Any = _H[8],
) -> Heartbeat:  # fmt: skip
    hb = _new(Heartbeat)
    s0(hb, amphora_id), s1(hb, seq), s2(hb, sent_at), s3(hb, interval), s4(hb, epoch)
    s5(hb, listeners), s6(hb, pools), s7(hb, _NATIVE), s8(hb, False)
    return hb


# -- decoding ----------------------------------------------------------------
def _malformed(detail: str) -> Rejected:
    return Rejected(Reason.MALFORMED, detail)


def _index(items: tuple[Any, ...], item: object) -> int:
    """Position of a bad element, for the error message only (off the hot path)."""
    return next(i for i, candidate in enumerate(items) if candidate is item)


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
        obj = _unpackb(data, **_UNPACK_LIMITS)
    except ValueError as exc:  # every msgpack parse error is a ValueError
        reason = Reason.OVER_LIMIT if "exceeds max_array_len" in str(exc) else Reason.MALFORMED
        raise Rejected(reason, f"msgpack: {exc or type(exc).__name__}") from None
    except Exception as exc:  # defensive: nothing but Rejected leaves the decoder
        raise _malformed(f"msgpack: {type(exc).__name__}") from None
    if type(obj) is not tuple or len(obj) != 7:
        raise _malformed("payload is not an array of 7 elements")
    amp, seq, sent_at, interval, epoch, listeners, pools = obj
    if amp != amphora_id:
        raise _malformed("payload amphora id differs from the header's")
    if not (
        type(seq) is type(sent_at) is type(interval) is type(epoch) is int
        and (seq | sent_at | epoch) >= 0
        and MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS
    ):
        raise _malformed("seq, sent_at_ms, interval_ms or counters_epoch out of type or range")
    listeners, pools = _listeners(listeners), _pools(pools)
    return _heartbeat(amphora_id, seq, sent_at, interval, epoch, listeners, pools)


def _listeners(
    items: object, l0: Any = _L[0], l1: Any = _L[1], l2: Any = _L[2], l3: Any = _L[3],
    l4: Any = _L[4], l5: Any = _L[5], l6: Any = _L[6],
) -> tuple[ListenerReport, ...]:  # fmt: skip
    if type(items) is not tuple:
        raise _malformed("listeners is not an array")
    if len(items) > MAX_LISTENERS:
        raise Rejected(Reason.OVER_LIMIT, f"{len(items)} listeners > {MAX_LISTENERS}")
    out = []
    append = out.append
    for item in items:
        if type(item) is not tuple or len(item) != 7:
            raise _malformed(f"listener {_index(items, item)} is not an array of 7 elements")
        lid, code, cur, b_in, b_out, total, errors = item
        if type(lid) is not bytes or len(lid) != ID_BYTES:
            raise _malformed(f"listener {_index(items, item)}: id is not a 16-byte binary")
        if not (
            type(code)
            is type(cur)
            is type(b_in)
            is type(b_out)
            is type(total)
            is type(errors)
            is int
            and (cur | b_in | b_out | total | errors) >= 0
            and 0 <= code <= MAX_STATUS_CODE
        ):
            raise _malformed(
                f"listener {_index(items, item)}: status or counter out of type or range"
            )
        lis = _new(ListenerReport)  # inlined _listener(): this loop is the hot path
        l0(lis, lid), l1(lis, _LISTENER_STATES[code]), l2(lis, cur), l3(lis, b_in)
        l4(lis, b_out), l5(lis, total), l6(lis, errors)
        append(lis)
    if len(items) > 1 and len(frozenset(map(_first, items))) != len(items):
        raise _malformed("a listener id appears twice")
    return tuple(out)


def _pools(
    items: object, p0: Any = _P[0], p1: Any = _P[1], p2: Any = _P[2], p3: Any = _P[3],
    m0: Any = _M[0], m1: Any = _M[1],
) -> tuple[PoolReport, ...]:  # fmt: skip
    if type(items) is not tuple:
        raise _malformed("pools is not an array")
    if len(items) > MAX_POOLS:
        raise Rejected(Reason.OVER_LIMIT, f"{len(items)} pools > {MAX_POOLS}")
    out = []
    member_count = 0
    for item in items:
        if type(item) is not tuple or len(item) != 4:
            raise _malformed(f"pool {_index(items, item)} is not an array of 4 elements")
        pid, lid, code, members = item
        if not (
            type(pid) is type(lid) is bytes
            and len(pid) == len(lid) == ID_BYTES
            and type(code) is int
            and 0 <= code <= MAX_STATUS_CODE
            and type(members) is tuple
        ):
            raise _malformed(
                f"pool {_index(items, item)}: id, listener id, status or members out of type"
                " or range"
            )
        count = len(members)
        if count > MAX_MEMBERS_PER_POOL:
            raise Rejected(
                Reason.OVER_LIMIT,
                f"pool {_index(items, item)}: {count} members > {MAX_MEMBERS_PER_POOL}",
            )
        member_count += count
        if member_count > MAX_MEMBERS:
            raise Rejected(Reason.OVER_LIMIT, f"more than {MAX_MEMBERS} members")
        reports = []
        append = reports.append
        for member in members:  # the innermost loop: constructor inlined
            if type(member) is not tuple or len(member) != 2:
                raise _bad_member(items, item, member, "is not an array of 2 elements")
            mid, mcode = member
            if not (
                type(mid) is bytes
                and len(mid) == ID_BYTES
                and type(mcode) is int
                and 0 <= mcode <= MAX_STATUS_CODE
            ):
                raise _bad_member(items, item, member, "id or status out of type or range")
            report = _new(MemberReport)
            m0(report, mid), m1(report, _MEMBER_STATES[mcode])
            append(report)
        if count > 1 and len(frozenset(map(_first, members))) != count:
            raise _malformed(f"pool {_index(items, item)}: a member id appears twice")
        pool = _new(PoolReport)
        p0(pool, pid), p1(pool, lid), p2(pool, _POOL_STATES[code]), p3(pool, tuple(reports))
        out.append(pool)
    if len(out) > 1 and len(frozenset(map(_pool_key, items))) != len(out):
        raise _malformed("a (pool id, listener id) pair appears twice")
    return tuple(out)


def _bad_member(pools: Any, pool: Any, member: Any, what: str) -> Rejected:
    return _malformed(f"pool {_index(pools, pool)} member {_index(pool[3], member)} {what}")

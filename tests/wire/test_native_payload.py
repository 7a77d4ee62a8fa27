"""Payload internals: msgspec builds the very same values, and only the wire's arrays."""

from __future__ import annotations

import msgpack
import msgspec
import pytest

from healthmgr.wire import payload
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    MemberReport,
    MemberState,
    PoolReport,
    WireFormat,
)
from tests.wire.native_samples import AMPHORA, large, seed


def test_value_classes_are_frozen_structs():
    for cls in (Heartbeat, ListenerReport, PoolReport, MemberReport):
        assert issubclass(cls, msgspec.Struct)
        assert cls.__struct_config__.frozen


def test_decoded_values_equal_and_hash_like_constructed_ones():
    hb = large(listeners=3, members_per_pool=4)
    decoded = payload.unpack_payload(payload.pack_payload(hb), AMPHORA)
    assert decoded == hb
    assert hash(decoded) == hash(hb)
    assert repr(decoded) == repr(hb)
    replace = msgspec.structs.replace
    assert replace(decoded, seq=1) == replace(hb, seq=1)


def _reason(elements: list[object]) -> Reason:
    with pytest.raises(Rejected) as info:
        payload.unpack_payload(msgpack.packb(elements), AMPHORA)
    return info.value.reason


def _elements(hb: Heartbeat) -> list[object]:
    return list(msgpack.unpackb(payload.pack_payload(hb)))


def test_fields_beyond_the_layout_are_malformed_not_ignored():
    # Heartbeat has two fields the wire does not carry (format, counters_are_deltas):
    # a payload must not set them, and no array may carry trailing elements.
    base = _elements(seed())
    assert _reason([*base, int(WireFormat.OCTAVIA), True]) is Reason.MALFORMED
    listener = [*base[5][0], 0]
    assert _reason([*base[:5], [listener], base[6]]) is Reason.MALFORMED
    pool = [*base[6][0], 0]
    assert _reason([*base[:6], [pool]]) is Reason.MALFORMED


def test_unknown_status_codes_decode_to_other():
    base = _elements(seed())
    pool = list(base[6][0])
    pool[3] = [[pool[3][0][0], 77]]
    hb = payload.unpack_payload(msgpack.packb([*base[:6], [pool]]), AMPHORA)
    assert hb.pools[0].members[0].status is MemberState.OTHER

"""Payload internals: the slot-filling constructors build the very same values."""

from __future__ import annotations

import dataclasses

from healthmgr.wire import payload
from healthmgr.wire.values import Heartbeat, ListenerReport, MemberReport, PoolReport
from tests.wire.native_samples import AMPHORA, large


def test_value_classes_have_no_init_logic_to_bypass():
    for cls in (Heartbeat, ListenerReport, PoolReport, MemberReport):
        assert dataclasses.is_dataclass(cls)
        assert not hasattr(cls, "__post_init__"), f"{cls.__name__} gained __post_init__"
        assert tuple(f.name for f in dataclasses.fields(cls)) == cls.__slots__


def test_decoded_values_equal_and_hash_like_constructed_ones():
    hb = large(listeners=3, members_per_pool=4)
    decoded = payload.unpack_payload(payload.pack_payload(hb), AMPHORA)
    assert decoded == hb
    assert hash(decoded) == hash(hb)
    assert repr(decoded) == repr(hb)
    assert dataclasses.replace(decoded, seq=1) == dataclasses.replace(hb, seq=1)

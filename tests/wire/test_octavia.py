"""Octavia envelope: round trips, rejections, bounds, and fuzzing."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import tracemalloc
import uuid
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthmgr.wire import octavia
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.haproxy_status import (
    listener_state_from_haproxy,
    member_state_from_haproxy,
    pool_state_from_haproxy,
)
from healthmgr.wire.ids import id_str
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

KEY = b"fleet-heartbeat-key"
NOW_MS = 1_750_000_000_000


def _id(n: int) -> bytes:
    return uuid.UUID(int=n).bytes


def _sign(payload: bytes, key: bytes = KEY) -> bytes:
    return payload + hmac.new(key, payload, hashlib.sha256).hexdigest().encode("ascii")


def _seed(deltas: bool = True, listener_of_pool: bool = True) -> Heartbeat:
    lst = _id(10)
    return Heartbeat(
        amphora_id=_id(1),
        seq=41,
        sent_at_ms=NOW_MS,
        interval_ms=0,
        counters_epoch=0,
        listeners=(ListenerReport(lst, ListenerState.OPEN, 2, 100, 900, 12, 1),),
        pools=(
            PoolReport(
                _id(20),
                lst if listener_of_pool else None,
                PoolState.UP,
                (MemberReport(_id(30), MemberState.UP), MemberReport(_id(31), MemberState.DOWN)),
            ),
        ),
        format=WireFormat.OCTAVIA,
        counters_are_deltas=deltas,
    )


def _decode(datagram: bytes, key: bytes = KEY) -> Heartbeat:
    return octavia.decode(datagram, key, received_at_ms=NOW_MS)


def _reason(datagram: bytes, key: bytes = KEY) -> Reason:
    with pytest.raises(Rejected) as caught:
        _decode(datagram, key)
    return caught.value.reason


# --- round trips ---------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("hex_digest", [True, False])
def test_round_trip_every_version_and_digest(version: int, hex_digest: bool) -> None:
    hb = _seed(deltas=version == 3)
    datagram = octavia.encode(octavia.heartbeat_to_message(hb, version), KEY, hex_digest=hex_digest)
    assert _decode(datagram) == hb


def test_message_without_ver_is_version_1_with_nested_pools() -> None:
    message = octavia.heartbeat_to_message(_seed(), 1)
    del message["ver"]
    assert _decode(octavia.encode(message, KEY)) == _seed(deltas=False)


def test_v1_pool_key_with_listener_overrides_enclosing_listener() -> None:
    message = octavia.heartbeat_to_message(_seed(), 1)
    lst = id_str(_id(10))
    pools = message["listeners"][lst]["pools"]
    pools[f"{id_str(_id(20))}:{id_str(_id(11))}"] = pools.pop(id_str(_id(20)))
    hb = _decode(octavia.encode(message, KEY))
    assert hb.pools[0].listener_id == _id(11)


def test_v2_bare_pool_key_has_no_listener() -> None:
    hb = _seed(deltas=False, listener_of_pool=False)
    datagram = octavia.encode(octavia.heartbeat_to_message(hb, 2), KEY)
    assert _decode(datagram).pools[0].listener_id is None


def test_only_v3_counters_are_deltas() -> None:
    for version, deltas in ((1, False), (2, False), (3, True)):
        message = octavia.heartbeat_to_message(_seed(), version)
        assert _decode(octavia.encode(message, KEY)).counters_are_deltas is deltas


def test_fields_octavia_does_not_carry() -> None:
    hb = _decode(octavia.encode(octavia.heartbeat_to_message(_seed()), KEY))
    assert hb.sent_at_ms == NOW_MS  # the receive time: Octavia sends no clock
    assert (hb.interval_ms, hb.counters_epoch, hb.format) == (0, 0, WireFormat.OCTAVIA)


def test_v1_pools_at_top_level_and_v3_pools_in_listeners_are_ignored() -> None:
    v1 = octavia.heartbeat_to_message(_seed(), 1)
    v1["pools"] = {"not even": "looked at"}
    assert _decode(octavia.encode(v1, KEY)).pools == _seed().pools
    v3 = octavia.heartbeat_to_message(_seed(), 3)
    v3["listeners"][id_str(_id(10))]["pools"] = "ignored"
    assert _decode(octavia.encode(v3, KEY)).pools == _seed().pools


def test_missing_stats_and_counters_read_as_zero() -> None:
    message = octavia.heartbeat_to_message(_seed(), 2)
    body = message["listeners"][id_str(_id(10))]
    del body["stats"]["ereq"]  # agents older than ereq
    hb = _decode(octavia.encode(message, KEY))
    assert hb.listeners[0].request_errors == 0
    del body["stats"]
    assert _decode(octavia.encode(message, KEY)).listeners[0].bytes_in == 0


def test_uppercase_uuid_accepted() -> None:
    message = octavia.heartbeat_to_message(_seed(), 3)
    message["id"] = message["id"].upper()
    assert _decode(octavia.encode(message, KEY)).amphora_id == _id(1)


@pytest.mark.parametrize(
    "text",
    [
        "00000000000000000000000000000001",  # no hyphens
        "{00000000-0000-0000-0000-000000000001}",
        "urn:uuid:00000000-0000-0000-0000-000000000001",
        "0000000 -0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-00000000000g",
        "00000000-0000-0000-0000--00000000001",
        "00000000-0000-0000-0000-0000000000\uff101",  # non-ASCII (fullwidth) digit
    ],
)
def test_non_canonical_uuid_rejected(text: str) -> None:
    message = octavia.heartbeat_to_message(_seed(), 3)
    message["id"] = text
    assert _reason(octavia.encode(message, KEY)) is Reason.MALFORMED


def test_heartbeat_to_message_refuses_v1_pool_without_listener() -> None:
    with pytest.raises(ValueError, match="v1 pool"):
        octavia.heartbeat_to_message(_seed(listener_of_pool=False), 1)
    with pytest.raises(ValueError, match="1, 2 or 3"):
        octavia.heartbeat_to_message(_seed(), 4)


# --- envelope --------------------------------------------------------------
def test_raw_digest_form_is_32_bytes_and_hex_is_64_ascii() -> None:
    message = octavia.heartbeat_to_message(_seed())
    hexed = octavia.encode(message, KEY)
    raw = octavia.encode(message, KEY, hex_digest=False)
    assert hexed[:-64] == raw[:-32]
    assert hexed[-64:] == raw[-32:].hex().encode("ascii")


def test_wrong_key_rejected_in_both_forms() -> None:
    message = octavia.heartbeat_to_message(_seed())
    for hex_digest in (True, False):
        datagram = octavia.encode(message, b"other", hex_digest=hex_digest)
        assert _reason(datagram) is Reason.BAD_SIGNATURE


def test_oversized_datagram_rejected_before_hmac() -> None:
    assert _reason(b"\0" * (octavia.MAX_DATAGRAM + 1)) is Reason.OVER_LIMIT


def test_bomb_rejected_without_inflating_it() -> None:
    bomb = _sign(zlib.compress(b"\0" * (10 * 1024 * 1024), 9))
    assert len(bomb) < octavia.MAX_DATAGRAM
    tracemalloc.start()
    try:
        assert _reason(bomb) is Reason.OVER_LIMIT
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The inflater stops at the bound: the 10 MiB are never materialised.
    # (~2x the bound: zlib's output blocks plus the joined bytes object.)
    assert peak < 4 * octavia.MAX_JSON_BYTES  # 1 MiB, a tenth of the bomb


def test_json_at_the_bound_is_decoded_and_one_byte_more_is_not() -> None:
    text = json.dumps(octavia.heartbeat_to_message(_seed())).encode()
    exact = text + b" " * (octavia.MAX_JSON_BYTES - len(text))
    assert _decode(_sign(zlib.compress(exact))) == _seed()
    assert _reason(_sign(zlib.compress(exact + b" "))) is Reason.OVER_LIMIT


def test_member_limits() -> None:
    message = octavia.heartbeat_to_message(_seed(), 3)
    key = next(iter(message["pools"]))
    members = {id_str(_id(1000 + i)): "UP" for i in range(octavia.MAX_MEMBERS_PER_POOL + 1)}
    message["pools"][key]["members"] = members
    assert _reason(octavia.encode(message, KEY)) is Reason.OVER_LIMIT


def test_message_to_heartbeat_rejects_non_string_pool_key() -> None:
    message = octavia.heartbeat_to_message(_seed(), 3)
    message["pools"] = {1: {"status": "UP"}}
    with pytest.raises(Rejected) as caught:
        octavia.message_to_heartbeat(message, received_at_ms=0)
    assert caught.value.reason is Reason.MALFORMED


def test_hmac_is_checked_before_decompression(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(payload: bytes) -> bytes:
        raise AssertionError("decompressed an unauthenticated datagram")

    monkeypatch.setattr(octavia, "decompress", boom)
    bomb = zlib.compress(b"\0" * 1_000_000)
    assert _reason(bomb + b"0" * 64) is Reason.BAD_SIGNATURE


# --- HAProxy status mapping ------------------------------------------------
@pytest.mark.parametrize(
    ("status", "weight", "expected"),
    [
        ("UP", None, MemberState.UP),
        ("UP", 1, MemberState.UP),
        ("UP", 0, MemberState.DRAIN),
        ("UP 1/3", None, MemberState.UP),
        ("UP 2/3", 0, MemberState.DRAIN),
        ("DOWN", None, MemberState.DOWN),
        ("DOWN", 0, MemberState.DOWN),
        ("DOWN 1/2", None, MemberState.DOWN),
        ("DOWN (agent)", None, MemberState.DOWN),
        ("DRAIN", None, MemberState.DRAIN),
        ("DRAIN (agent)", None, MemberState.DRAIN),
        ("MAINT", None, MemberState.MAINT),
        ("MAINT(via)", None, MemberState.MAINT),
        ("MAINT (via pool/web-1)", None, MemberState.MAINT),
        ("MAINT(resolution)", None, MemberState.MAINT),
        ("no check", None, MemberState.NO_CHECK),
        ("no check", 0, MemberState.NO_CHECK),
        ("NOLB", None, MemberState.OTHER),
        ("NOLB 1/2", None, MemberState.OTHER),
        ("RESTARTING", None, MemberState.OTHER),
        ("UPPER", None, MemberState.OTHER),
        ("up", None, MemberState.OTHER),
        ("", None, MemberState.OTHER),
        ("ONLINE", None, MemberState.OTHER),
    ],
)
def test_member_state_from_haproxy(status: str, weight: int | None, expected: MemberState) -> None:
    assert member_state_from_haproxy(status, weight) is expected


def test_listener_and_pool_state_from_haproxy() -> None:
    assert [listener_state_from_haproxy(s) for s in ("OPEN", "FULL", "STOP", "DOWN", "")] == [
        ListenerState.OPEN,
        ListenerState.FULL,
        ListenerState.STOP,
        ListenerState.OTHER,
        ListenerState.OTHER,
    ]
    assert [pool_state_from_haproxy(s) for s in ("UP", "DOWN", "MAINT", "up")] == [
        PoolState.UP,
        PoolState.DOWN,
        PoolState.OTHER,
        PoolState.OTHER,
    ]


# --- properties ------------------------------------------------------------
ids = st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: uuid.UUID(int=n).bytes)
counters = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def heartbeats(draw: st.DrawFn, version: int) -> Heartbeat:
    listeners = draw(
        st.lists(
            st.builds(
                ListenerReport,
                ids,
                st.sampled_from(ListenerState),
                counters,
                counters,
                counters,
                counters,
                counters,
            ),
            max_size=4,
            unique_by=lambda lst: lst.id,
        )
    )
    listener_ids = [lst.id for lst in listeners]
    pool_listener = (
        st.sampled_from(listener_ids)
        if version == 1
        else st.one_of(st.none(), st.sampled_from(listener_ids))
        if listener_ids
        else st.none()
    )
    pools = []
    if listener_ids or version >= 2:
        members = st.lists(
            st.builds(MemberReport, ids, st.sampled_from(MemberState)),
            max_size=5,
            unique_by=lambda m: m.id,
        ).map(tuple)
        pools = draw(
            st.lists(
                st.builds(PoolReport, ids, pool_listener, st.sampled_from(PoolState), members),
                max_size=4,
                unique_by=lambda p: p.id,
            )
        )
    if version == 1:  # nesting groups pools by listener, in listener order
        pools.sort(key=lambda p: listener_ids.index(p.listener_id))
    return Heartbeat(
        amphora_id=draw(ids),
        seq=draw(counters),
        sent_at_ms=NOW_MS,
        interval_ms=0,
        counters_epoch=0,
        listeners=tuple(listeners),
        pools=tuple(pools),
        format=WireFormat.OCTAVIA,
        counters_are_deltas=version == 3,
    )


@pytest.mark.parametrize("version", [1, 2, 3])
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_property_round_trip(version: int, data: st.DataObject) -> None:
    hb = data.draw(heartbeats(version))
    hex_digest = data.draw(st.booleans())
    message = octavia.heartbeat_to_message(hb, version)
    assert _decode(octavia.encode(message, KEY, hex_digest=hex_digest)) == hb


@given(st.binary(max_size=2048))
@settings(max_examples=400, deadline=None)
def test_property_any_bytes_only_rejected(datagram: bytes) -> None:
    with contextlib.suppress(Rejected):
        _decode(datagram)


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_property_any_signed_payload_only_rejected(payload: bytes) -> None:
    # Past the HMAC: what a key holder (or a buggy agent) could send.
    for datagram in (_sign(payload), _sign(zlib.compress(payload))):
        with contextlib.suppress(Rejected):
            _decode(datagram)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.sampled_from([id_str(_id(1)), f"{id_str(_id(2))}:{id_str(_id(3))}", "UP", "OPEN"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=40) | st.sampled_from([id_str(_id(4)), "status", "members", "stats"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_mutated_messages_only_rejected(data: st.DataObject) -> None:
    # Take a valid message and replace one node anywhere with any JSON value.
    version = data.draw(st.sampled_from([1, 2, 3]))
    message: Any = octavia.heartbeat_to_message(data.draw(heartbeats(version)), version)
    node = message
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node, key=str)))
        if data.draw(st.booleans()) or not isinstance(node[key], dict):
            node[key] = data.draw(json_values)
            break
        node = node[key]
    datagram = _sign(zlib.compress(json.dumps(message).encode()))
    try:
        hb = _decode(datagram)
    except Rejected:
        return
    assert isinstance(hb, Heartbeat)


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_property_no_modification_of_a_signed_datagram_is_accepted(data: st.DataObject) -> None:
    hex_digest = data.draw(st.booleans())
    good = octavia.encode(octavia.heartbeat_to_message(_seed()), KEY, hex_digest=hex_digest)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(good) - 1))
        bit = data.draw(st.integers(0, 7))
        bad = good[:at] + bytes([good[at] ^ (1 << bit)]) + good[at + 1 :]
    elif kind == "truncate":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif kind == "extend":
        bad = good + data.draw(st.binary(min_size=1, max_size=80))
    else:  # replace a slice with different bytes
        start = data.draw(st.integers(0, len(good) - 1))
        end = data.draw(st.integers(start + 1, len(good)))
        new = data.draw(st.binary(max_size=40).filter(lambda b: b != good[start:end]))
        bad = good[:start] + new + good[end:]
    with pytest.raises(Rejected) as caught:
        _decode(bad)
    assert caught.value.reason in (Reason.BAD_SIGNATURE, Reason.MALFORMED)

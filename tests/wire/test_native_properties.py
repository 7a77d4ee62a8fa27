"""Property tests: the decoder only ever raises Rejected; no tampering is accepted."""

from __future__ import annotations

import hmac

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthmgr.wire import envelope
from healthmgr.wire.errors import Rejected
from healthmgr.wire.native import decode_native, encode_native
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
)
from tests.wire.native_samples import AMPHORA, keyring, seed

RING = keyring()
KEY_ID, KEY = RING.provision(AMPHORA)
SEED = encode_native(seed(), KEY_ID, KEY)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.binary(min_size=16, max_size=16)
u64 = st.integers(0, 2**64 - 1)
listeners = st.builds(ListenerReport, ids, st.sampled_from(ListenerState), u64, u64, u64, u64, u64)
members = st.builds(MemberReport, ids, st.sampled_from(MemberState))
pools = st.builds(
    PoolReport,
    ids,
    ids,
    st.sampled_from(PoolState),
    st.lists(members, max_size=6, unique_by=lambda m: m.id).map(tuple),
)
heartbeats = st.builds(
    Heartbeat,
    st.just(AMPHORA),
    u64,
    u64,
    st.integers(1, 3_600_000),
    u64,
    st.lists(listeners, max_size=4, unique_by=lambda x: x.id).map(tuple),
    st.lists(pools, max_size=4, unique_by=lambda p: (p.id, p.listener_id)).map(tuple),
)


def decodes_or_rejects(data: bytes) -> Heartbeat | None:
    try:
        return decode_native(data, RING)
    except Rejected:
        return None


@FAST
@given(heartbeats)
def test_any_valid_heartbeat_round_trips(hb):
    assert decode_native(encode_native(hb, KEY_ID, KEY), RING) == hb


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_rejected(data):
    decodes_or_rejects(data)
    decodes_or_rejects(b"AHB\x01\x00\x01" + AMPHORA + data)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_signed_payloads_only_raise_rejected(payload):
    # Past the signature check: the parser itself must be total.
    decodes_or_rejects(envelope.seal(KEY_ID, AMPHORA, payload, KEY))


@FAST
@given(st.integers(0, len(SEED) * 8 - 1))
def test_no_single_bit_flip_is_accepted(bit):
    data = bytearray(SEED)
    data[bit // 8] ^= 1 << (bit % 8)
    assert decodes_or_rejects(bytes(data)) is None


@FAST
@given(st.integers(0, len(SEED) - 1), st.integers(1, 255))
def test_no_byte_change_is_accepted(index, delta):
    data = bytearray(SEED)
    data[index] = (data[index] + delta) % 256
    assert decodes_or_rejects(bytes(data)) is None


@FAST
@given(st.integers(0, len(SEED) - 1), st.binary(min_size=1, max_size=40))
def test_no_truncation_or_extension_is_accepted(cut, tail):
    assert decodes_or_rejects(SEED[:cut]) is None
    assert decodes_or_rejects(SEED + tail) is None
    assert decodes_or_rejects(SEED[:cut] + tail + SEED[cut:]) is None


@FAST
@given(st.binary(max_size=100), st.binary(max_size=300))
def test_mac_is_hmac_sha256(key, message):
    assert envelope.mac(key, message) == hmac.digest(key, message, "sha256")

"""Native format: round trips and one test per rejection reason."""

from __future__ import annotations

import msgpack
import pytest

from healthmgr.wire import envelope, limits
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.native import (
    check_native,
    decode_native,
    encode_native,
    is_native,
    peek_header,
)
from healthmgr.wire.values import (
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
    WireFormat,
)
from tests.wire.native_samples import AMPHORA, LISTENER, MEMBER_1, POOL, keyring, large, seed, uid


def signed(payload: object, *, raw: bytes | None = None, key_id: int = 1) -> bytes:
    """A correctly signed datagram around any payload (to reach the payload checks)."""
    body = raw if raw is not None else msgpack.packb(payload, use_bin_type=True)
    return envelope.seal(key_id, AMPHORA, body, keyring().key_for(key_id, AMPHORA))


def fields(**changes: object) -> list[object]:
    """The seed payload as the positional array, with elements replaced by index name."""
    base = [
        AMPHORA,
        5,
        1_767_225_600_000,
        10_000,
        7,
        [[LISTENER, 1, 0, 0, 0, 0, 0]],
        [[POOL, LISTENER, 1, [[MEMBER_1, 1]]]],
    ]
    names = ["amphora", "seq", "sent", "interval", "epoch", "listeners", "pools"]
    for name, value in changes.items():
        base[names.index(name)] = value
    return base


def reason(datagram: bytes) -> Reason:
    with pytest.raises(Rejected) as info:
        decode_native(datagram, keyring())
    return info.value.reason


@pytest.mark.parametrize("hb", [seed(), large(), seed(listeners=(), pools=())])
def test_round_trip(hb):
    ring = keyring()
    key_id, key = ring.provision(hb.amphora_id)
    datagram = encode_native(hb, key_id, key)
    decoded = decode_native(datagram, ring)
    assert decoded == hb
    assert decoded.format is WireFormat.NATIVE and not decoded.counters_are_deltas
    assert isinstance(decoded.listeners[0].status if hb.listeners else 0, int)
    assert is_native(datagram)
    assert peek_header(datagram) == (key_id, hb.amphora_id)


def test_statuses_come_back_as_enums():
    hb = decode_native(encode_native(seed(), *keyring().provision(AMPHORA)), keyring())
    assert hb.listeners[0].status is ListenerState.OPEN
    assert hb.pools[0].status is PoolState.UP
    assert [m.status for m in hb.pools[0].members] == [MemberState.UP, MemberState.DOWN]


def test_seed_datagram_is_small_and_layout_is_as_specified():
    datagram = encode_native(seed(), *keyring().provision(AMPHORA))
    assert len(datagram) < 300
    assert datagram[:4] == b"AHB\x01"
    assert datagram[4:6] == b"\x00\x01"
    assert datagram[6:22] == AMPHORA
    payload = msgpack.unpackb(datagram[22:-32])
    assert payload[0] == AMPHORA and len(payload) == 7


def test_rotation_accepts_every_configured_master_key():
    hb = seed()
    ring = keyring()
    for key_id in ring.key_ids:
        assert decode_native(encode_native(hb, key_id, ring.key_for(key_id, AMPHORA)), ring) == hb


def test_unknown_status_codes_decode_to_other():
    payload = fields(
        listeners=[[LISTENER, 200, 0, 0, 0, 0, 0]],
        pools=[[POOL, LISTENER, 9, [[MEMBER_1, 255]]]],
    )
    hb = decode_native(signed(payload), keyring())
    assert hb.listeners[0].status is ListenerState.OTHER
    assert hb.pools[0].status is PoolState.OTHER
    assert hb.pools[0].members[0].status is MemberState.OTHER


def test_non_canonical_msgpack_integers_are_accepted():
    # uint64 encoding of a small seq: legal msgpack, the tag covers the bytes.
    body = msgpack.packb(fields(seq=0), use_bin_type=True)
    raw = body.replace(b"\xcd\x27\x10", b"\xcf" + (10_000).to_bytes(8, "big"), 1)
    assert raw != body
    assert decode_native(signed(None, raw=raw), keyring()).interval_ms == 10_000


# -- envelope rejections, in the order the spec checks them -------------------
def test_over_limit_datagram_is_rejected_first():
    assert reason(b"AHB\x01" + bytes(limits.MAX_DATAGRAM_BYTES)) is Reason.OVER_LIMIT


@pytest.mark.parametrize("data", [b"", b"A", b"AH", b"x\x9c\x01\x02", b"BHB\x01" + bytes(60)])
def test_bad_magic(data):
    assert reason(data) is Reason.BAD_MAGIC


def test_bad_version():
    good = encode_native(seed(), *keyring().provision(AMPHORA))
    assert reason(b"AHB\x02" + good[4:]) is Reason.BAD_VERSION


@pytest.mark.parametrize("size", [3, 4, 22, 54])
def test_truncated_is_malformed(size):
    good = encode_native(seed(), *keyring().provision(AMPHORA))
    assert reason(good[:size]) is Reason.MALFORMED


def test_unknown_key_id():
    good = encode_native(seed(), *keyring().provision(AMPHORA))
    assert reason(good[:4] + b"\x00\x07" + good[6:]) is Reason.UNKNOWN_KEY


def test_key_of_another_amphora_is_a_bad_signature():
    # A compromised amphora signs with its own key but claims another id.
    other_key = keyring().key_for(1, uid(99))
    datagram = encode_native(seed(), 1, other_key)
    assert reason(datagram) is Reason.BAD_SIGNATURE


def test_bad_signature_on_flipped_tag_bit():
    good = bytearray(encode_native(seed(), *keyring().provision(AMPHORA)))
    good[-1] ^= 1
    assert reason(bytes(good)) is Reason.BAD_SIGNATURE


def test_check_native_returns_a_bad_tag_and_raises_the_rest():
    ring = keyring()
    good = encode_native(seed(), *ring.provision(AMPHORA))
    assert check_native(good, ring) == decode_native(good, ring)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    for _ in range(3):  # the same value each time, never raised: no traceback grows
        assert check_native(forged, ring) is envelope.BAD_TAG
    assert envelope.BAD_TAG.__traceback__ is None
    assert envelope.BAD_TAG.reason is Reason.BAD_SIGNATURE
    with pytest.raises(Rejected) as info:
        check_native(good[:30], ring)
    assert info.value.reason is Reason.MALFORMED
    with pytest.raises(Rejected) as info:
        check_native(signed(fields(seq=-1)), ring)
    assert info.value.reason is Reason.MALFORMED


# -- payload rejections (signed correctly, so they reach the parser) -----------
@pytest.mark.parametrize(
    "payload",
    [
        fields(amphora=uid(5)),  # differs from the header
        fields(seq=-1),
        fields(seq=1.5),
        fields(seq=True),
        fields(sent="now"),
        fields(interval=0),
        fields(interval=limits.MAX_INTERVAL_MS + 1),
        fields(epoch=None),
        fields(listeners=[[LISTENER, 1, 0, 0, 0, 0]]),  # 6 elements
        fields(listeners=[[LISTENER[:15], 1, 0, 0, 0, 0, 0]]),
        fields(listeners=[[LISTENER, 256, 0, 0, 0, 0, 0]]),
        fields(listeners=[[LISTENER, 1, -1, 0, 0, 0, 0]]),
        fields(listeners=[[LISTENER, 1, 0, 0, 0, 0, 0], [LISTENER, 1, 0, 0, 0, 0, 0]]),
        fields(listeners={}),
        fields(pools=[[POOL, None, 1, []]]),
        fields(pools=[[POOL, LISTENER, 1, [[MEMBER_1]]]]),
        fields(pools=[[POOL, LISTENER, 1, [[MEMBER_1, -1]]]]),
        fields(pools=[[POOL, LISTENER, 1, [[MEMBER_1, 1], [MEMBER_1, 2]]]]),
        fields(pools=[[POOL, LISTENER, 1, []], [POOL, LISTENER, 2, []]]),
        fields(pools=[[POOL, LISTENER, 1, 7]]),
        fields()[:6],
        [*fields(), 0],
        "a string",
        {"a": 1},
    ],
    ids=lambda p: repr(p)[:40],
)
def test_malformed_payloads(payload):
    assert reason(signed(payload)) is Reason.MALFORMED


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # too short overall (no payload byte)
        b"\xc1",  # never-used msgpack code
        b"\x97",  # array of 7 with nothing in it
        msgpack.packb(fields()) + b"\x00",  # trailing bytes
        b"\x91" * 40,  # nesting beyond the layout
        msgpack.packb(fields(listeners=[[b"x" * 17, 1, 0, 0, 0, 0, 0]])),  # bin too long
        msgpack.packb(msgpack.ExtType(1, b"x")),
    ],
)
def test_malformed_raw_payloads(raw):
    assert reason(signed(None, raw=raw)) is Reason.MALFORMED


@pytest.mark.parametrize(
    "payload",
    [
        fields(listeners=[[uid(i), 1, 0, 0, 0, 0, 0] for i in range(limits.MAX_LISTENERS + 1)]),
        fields(pools=[[uid(i), LISTENER, 1, []] for i in range(limits.MAX_POOLS + 1)]),
        fields(pools=[[POOL, LISTENER, 1, [[uid(i), 1] for i in range(1025)]]]),
        fields(pools=[[uid(p), LISTENER, 1, [[uid(i), 1] for i in range(820)]] for p in range(5)]),
        fields(listeners=[[]] * (limits.MAX_ARRAY_LEN + 1)),  # msgpack's own array bound
    ],
    ids=["listeners", "pools", "members-per-pool", "members-total", "array-len"],
)
def test_over_limit_payloads(payload):
    raw = msgpack.packb(payload, use_bin_type=True)
    assert reason(envelope.seal(1, AMPHORA, raw, keyring().key_for(1, AMPHORA))) in (
        Reason.OVER_LIMIT,
    )


# -- the encoder refuses what the decoder would reject -------------------------
@pytest.mark.parametrize(
    "hb",
    [
        seed(seq=-1),
        seed(interval_ms=0),
        seed(amphora_id=b"short"),
        seed(pools=(PoolReport(POOL, None, PoolState.UP, ()),)),
        seed(listeners=(ListenerReport(LISTENER, ListenerState.OPEN, 2**64, 0, 0, 0, 0),)),
        seed(pools=(PoolReport(POOL, LISTENER, PoolState.UP, (MemberReport(b"x", 1),)),)),
        seed(format=WireFormat.OCTAVIA),
        seed(counters_are_deltas=True),
    ],
)
def test_encoder_refuses_invalid_heartbeats(hb):
    with pytest.raises(ValueError):
        encode_native(hb, 1, keyring().key_for(1, AMPHORA))


def test_encoder_refuses_oversized_and_bad_keys():
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        encode_native(seed(), 1, b"short")
    with pytest.raises(ValueError, match="key id"):
        encode_native(seed(), 70000, bytes(32))
    huge = large(listeners=200, members_per_pool=16)  # about 80 kB
    with pytest.raises(ValueError, match="datagram of"):
        encode_native(huge, 1, bytes(32))

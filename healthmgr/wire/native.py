"""The native heartbeat format: encode for the agent, verify+decode for the manager.

    datagram = header(magic, version, key id, amphora id) + payload + HMAC-SHA256 tag

Spec: schema/heartbeat.md. The tag is verified before a byte of the payload is
parsed; any bad input raises ``Rejected`` with a reason from a fixed set.
"""

from __future__ import annotations

from healthmgr.wire import envelope
from healthmgr.wire.envelope import HEADER_BYTES, KEY_ID_OFFSET, MAGIC, VERSION
from healthmgr.wire.errors import Rejected
from healthmgr.wire.keys import KEY_BYTES, KeyLookup
from healthmgr.wire.limits import MAX_DATAGRAM_BYTES
from healthmgr.wire.payload import pack_payload, unpack_payload
from healthmgr.wire.values import Heartbeat, WireFormat

__all__ = [
    "MAGIC",
    "VERSION",
    "check_native",
    "decode_native",
    "encode_native",
    "is_native",
    "peek_header",
]


def decode_native(datagram: bytes, keys: KeyLookup) -> Heartbeat:
    """Verify and decode one datagram; raise ``Rejected`` for anything bad.

    Replay and freshness are the caller's next steps (healthmgr.wire.replay):
    they need the receiver's state and clock.
    """
    amphora_id, payload = envelope.open_envelope(datagram, keys)
    return unpack_payload(payload, amphora_id)


def check_native(datagram: bytes, keys: KeyLookup) -> Heartbeat | Rejected:
    """``decode_native`` for the manager: a bad tag (a forgery, the common case of
    a flood) is returned as ``envelope.BAD_TAG``; anything else bad raises."""
    opened = envelope.check_envelope(datagram, keys)
    if opened.__class__ is Rejected:
        return opened  # type: ignore[return-value]
    amphora_id, payload = opened  # type: ignore[misc]
    return unpack_payload(payload, amphora_id)


def encode_native(hb: Heartbeat, key_id: int, key: bytes) -> bytes:
    """The signed datagram for ``hb``; ValueError when ``hb`` breaks the spec's limits.

    The payload is checked with the decoder itself, so an agent can never send
    what a manager rejects.
    """
    if hb.format is not WireFormat.NATIVE or hb.counters_are_deltas:
        raise ValueError("only a native heartbeat (absolute counters) can be encoded")
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes (a derived amphora key)")
    payload = pack_payload(hb)
    try:
        unpack_payload(payload, hb.amphora_id)
    except Rejected as exc:
        raise ValueError(f"heartbeat cannot be encoded: {exc}") from None
    datagram = envelope.seal(key_id, hb.amphora_id, payload, key)
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise ValueError(f"datagram of {len(datagram)} bytes > {MAX_DATAGRAM_BYTES}")
    return datagram


def is_native(datagram: bytes) -> bool:
    """True when the datagram starts with the native magic (else try Octavia's format).

    Octavia's datagrams start with a zlib header (0x78), never with "A".
    """
    return datagram[:3] == MAGIC


def peek_header(datagram: bytes) -> tuple[int, bytes] | None:
    """(key id, amphora id) from an unverified header, or None if it is too short.

    For a receiver that filters unknown amphorae before deriving any key.
    Nothing here is authenticated yet.
    """
    if len(datagram) < HEADER_BYTES or datagram[:3] != MAGIC:
        return None
    # Index arithmetic, not int.from_bytes(..., "big"): 5,900 -> 3,800
    # instructions per call.
    amphora_id = datagram[6:HEADER_BYTES]
    if amphora_id.__class__ is not bytes:
        amphora_id = bytes(amphora_id)
    return (datagram[KEY_ID_OFFSET] << 8) | datagram[KEY_ID_OFFSET + 1], amphora_id

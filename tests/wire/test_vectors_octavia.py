"""Golden vectors for Octavia's heartbeat envelope (schema/vectors/octavia.json).

The tests read the checked-in file and check the decoder against it; the
generator below wrote it. Regenerate (only when the contract changes) with:

    .venv/bin/python tests/wire/test_vectors_octavia.py --write
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from healthmgr.wire import octavia
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.ids import id_str
from healthmgr.wire.values import Heartbeat

VECTORS = Path(__file__).resolve().parents[2] / "schema" / "vectors" / "octavia.json"

KEY_TEXT = "insecure-octavia-heartbeat-key"  # Octavia's [health_manager] heartbeat_key
KEY = KEY_TEXT.encode("utf-8")
RECEIVED_AT_MS = 1_700_000_000_000

AMP = "6f7a3c1e-0d2b-4c8e-9a51-3b7e2f90a001"
LST = "1b0d8e2a-5c4f-4e7a-8b9c-0a1b2c3d4e01"
LST2 = "1b0d8e2a-5c4f-4e7a-8b9c-0a1b2c3d4e02"
POOL = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b01"
POOL2 = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b02"
M1 = "c0ffee00-1111-4222-8333-444455556601"
M2 = "c0ffee00-1111-4222-8333-444455556602"
M3 = "c0ffee00-1111-4222-8333-444455556603"
M4 = "c0ffee00-1111-4222-8333-444455556604"
M5 = "c0ffee00-1111-4222-8333-444455556605"
M6 = "c0ffee00-1111-4222-8333-444455556606"


def _stats(rx: int, tx: int, conns: int, totconns: int, ereq: int | None = 0) -> dict[str, int]:
    stats = {"tx": tx, "rx": rx, "conns": conns, "totconns": totconns}
    if ereq is not None:
        stats["ereq"] = ereq
    return stats


# --- messages as Octavia's agents build them --------------------------------
def _v3_seed() -> dict[str, Any]:
    # The seed scenario: one HTTP listener, one pool, web-1 up, web-2 failing.
    return {
        "id": AMP,
        "seq": 67,
        "listeners": {LST: {"status": "OPEN", "stats": _stats(1024, 4096, 2, 17, 1)}},
        "pools": {f"{POOL}:{LST}": {"status": "UP", "members": {M1: "UP", M2: "DOWN 1/2"}}},
        "ver": 3,
    }


def _v2_mixed() -> dict[str, Any]:
    # An HAProxy listener and a UDP (LVS) listener whose pool key is bare.
    return {
        "id": AMP,
        "seq": 5,
        "listeners": {
            LST: {"status": "FULL", "stats": _stats(10, 20, 3, 40, 0)},
            LST2: {"status": "OPEN", "stats": _stats(0, 0, 0, 0, 0)},
        },
        "pools": {
            f"{POOL}:{LST}": {
                "status": "UP",
                "members": {M1: "UP 1/3", M2: "no check", M3: "DRAIN", M4: "MAINT"},
            },
            POOL2: {"status": "DOWN", "members": {M5: "DOWN", M6: "RESTARTING"}},
        },
        "ver": 2,
    }


def _v1_unversioned() -> dict[str, Any]:
    # Pre-versioning agent: no "ver", pools nested per listener and keyed by
    # bare pool id, no "ereq", a stopped listener reported as "DOWN".
    return {
        "id": AMP,
        "seq": 0,
        "listeners": {
            LST: {
                "status": "OPEN",
                "stats": _stats(5, 6, 1, 2, None),
                "pools": {POOL: {"status": "UP", "members": {M1: "UP", M2: "MAINT(via)"}}},
            },
            LST2: {"status": "DOWN", "stats": _stats(0, 0, 0, 0, None), "pools": {}},
        },
    }


def _v1_versioned() -> dict[str, Any]:
    return {
        "id": AMP,
        "seq": 9,
        "listeners": {
            LST: {
                "status": "STOP",
                "stats": _stats(7, 8, 0, 9, 2),
                "pools": {
                    f"{POOL}:{LST}": {"status": "weird", "members": {M1: "NOLB", M2: "DRAIN"}}
                },
            }
        },
        "ver": 1,
    }


def _spare() -> dict[str, Any]:
    return {"id": AMP, "seq": 3, "listeners": {}, "pools": {}, "ver": 3}


# --- raw envelope helpers (for datagrams the encoder would never build) -----
def _sign_hex(payload: bytes, key: bytes = KEY) -> bytes:
    return payload + hmac.new(key, payload, hashlib.sha256).hexdigest().encode("ascii")


def _signed_json(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return _sign_hex(zlib.compress(raw, 9))


def _signed_message(message: Any) -> bytes:
    return _signed_json(json.dumps(message))


def _with(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the item at ``path`` replaced (or deleted)."""
    copy = json.loads(json.dumps(base))
    node = copy
    for step in path[:-1]:
        node = node[step]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return copy


_DELETE = object()


def accepted_cases() -> list[tuple[str, bytes]]:
    return [
        ("v3_seed_hex_digest", octavia.encode(_v3_seed(), KEY)),
        ("v3_seed_raw_digest", octavia.encode(_v3_seed(), KEY, hex_digest=False)),
        ("v2_haproxy_and_udp_pools_hex", octavia.encode(_v2_mixed(), KEY)),
        ("v2_haproxy_and_udp_pools_raw", octavia.encode(_v2_mixed(), KEY, hex_digest=False)),
        ("v1_no_ver_nested_pools_raw", octavia.encode(_v1_unversioned(), KEY, hex_digest=False)),
        ("v1_no_ver_nested_pools_hex", octavia.encode(_v1_unversioned(), KEY)),
        ("v1_ver1_pool_listener_key_unknown_statuses", octavia.encode(_v1_versioned(), KEY)),
        ("v3_spare_amphora_no_listeners", octavia.encode(_spare(), KEY)),
    ]


def rejected_cases() -> list[tuple[str, bytes, Reason]]:
    seed = _v3_seed()
    good = octavia.encode(seed, KEY)
    flipped = bytearray(good)
    flipped[10] ^= 0x01
    upper_hex = good[:-64] + good[-64:].upper()
    bomb = zlib.compress(b"\0" * (10 * 1024 * 1024), 9)
    over_by_one = b'{"id": "x"}' + b" " * (octavia.MAX_JSON_BYTES - 10)
    many = {
        "id": AMP,
        "seq": 1,
        "ver": 3,
        "pools": {},
        "listeners": {
            f"00000000-0000-4000-8000-{i:012x}": {"status": "OPEN"}
            for i in range(octavia.MAX_LISTENERS + 1)
        },
    }
    return [
        ("wrong_key", octavia.encode(seed, b"another-key"), Reason.BAD_SIGNATURE),
        ("payload_bit_flipped", bytes(flipped), Reason.BAD_SIGNATURE),
        ("hex_digest_upper_case", upper_hex, Reason.BAD_SIGNATURE),
        ("unsigned_zlib_json", zlib.compress(json.dumps(seed).encode(), 9), Reason.BAD_SIGNATURE),
        ("too_short", b"\x78\x9c" + b"\0" * 20, Reason.MALFORMED),
        ("empty", b"", Reason.MALFORMED),
        ("zlib_bomb_10MiB_zeros", _sign_hex(bomb), Reason.OVER_LIMIT),
        ("json_one_byte_over_bound", _signed_json(over_by_one), Reason.OVER_LIMIT),
        ("too_many_listeners", _signed_message(many), Reason.OVER_LIMIT),
        ("deep_nesting", _signed_json("[" * 5000 + "]" * 5000), Reason.OVER_LIMIT),
        ("not_zlib", _sign_hex(b"this is not a zlib stream at all"), Reason.MALFORMED),
        (
            "truncated_zlib",
            _sign_hex(zlib.compress(json.dumps(seed).encode())[:-6]),
            Reason.MALFORMED,
        ),
        ("bytes_after_zlib", _sign_hex(zlib.compress(b"{}") + b"junk"), Reason.MALFORMED),
        ("not_json", _signed_json("id=amphora;seq=1"), Reason.MALFORMED),
        ("not_utf8", _signed_json(b'{"id": "\xff\xfe"}'), Reason.MALFORMED),
        ("json_array", _signed_message([seed]), Reason.MALFORMED),
        ("id_not_uuid", _signed_message(_with(seed, ("id",), "amphora-1")), Reason.MALFORMED),
        ("id_missing", _signed_message(_with(seed, ("id",), _DELETE)), Reason.MALFORMED),
        ("seq_missing", _signed_message(_with(seed, ("seq",), _DELETE)), Reason.MALFORMED),
        ("seq_negative", _signed_message(_with(seed, ("seq",), -1)), Reason.MALFORMED),
        ("seq_float", _signed_message(_with(seed, ("seq",), 1.5)), Reason.MALFORMED),
        ("ver_string", _signed_message(_with(seed, ("ver",), "3")), Reason.MALFORMED),
        ("ver_4", _signed_message(_with(seed, ("ver",), 4)), Reason.BAD_VERSION),
        ("ver_0", _signed_message(_with(seed, ("ver",), 0)), Reason.BAD_VERSION),
        (
            "listeners_missing",
            _signed_message(_with(seed, ("listeners",), _DELETE)),
            Reason.MALFORMED,
        ),
        ("listeners_list", _signed_message(_with(seed, ("listeners",), [])), Reason.MALFORMED),
        (
            "listener_id_not_uuid",
            _signed_message(_with(seed, ("listeners",), {"listener-1": {"status": "OPEN"}})),
            Reason.MALFORMED,
        ),
        (
            "counter_string",
            _signed_message(_with(seed, ("listeners", LST, "stats", "rx"), "1024")),
            Reason.MALFORMED,
        ),
        (
            "counter_bool",
            _signed_message(_with(seed, ("listeners", LST, "stats", "tx"), True)),
            Reason.MALFORMED,
        ),
        (
            "counter_over_uint64",
            _signed_message(_with(seed, ("listeners", LST, "stats", "totconns"), 2**64)),
            Reason.MALFORMED,
        ),
        (
            "listener_status_missing",
            _signed_message(_with(seed, ("listeners", LST, "status"), _DELETE)),
            Reason.MALFORMED,
        ),
        ("pools_list", _signed_message(_with(seed, ("pools",), [])), Reason.MALFORMED),
        (
            "pool_listener_part_not_uuid",
            _signed_message(_with(seed, ("pools",), {f"{POOL}:x": {"status": "UP"}})),
            Reason.MALFORMED,
        ),
        (
            "member_status_number",
            _signed_message(_with(seed, ("pools", f"{POOL}:{LST}", "members", M1), 1)),
            Reason.MALFORMED,
        ),
        (
            "member_status_too_long",
            _signed_message(_with(seed, ("pools", f"{POOL}:{LST}", "members", M1), "U" * 65)),
            Reason.OVER_LIMIT,
        ),
    ]


# --- JSON form of a decoded heartbeat ---------------------------------------
def heartbeat_as_json(hb: Heartbeat) -> dict[str, Any]:
    """Ids as UUID strings, enums by name: the 'expected' form in the file."""
    return {
        "amphora_id": id_str(hb.amphora_id),
        "seq": hb.seq,
        "sent_at_ms": hb.sent_at_ms,
        "interval_ms": hb.interval_ms,
        "counters_epoch": hb.counters_epoch,
        "format": hb.format.name,
        "counters_are_deltas": hb.counters_are_deltas,
        "listeners": [
            {
                "id": id_str(lst.id),
                "status": lst.status.name,
                "current_connections": lst.current_connections,
                "bytes_in": lst.bytes_in,
                "bytes_out": lst.bytes_out,
                "total_connections": lst.total_connections,
                "request_errors": lst.request_errors,
            }
            for lst in hb.listeners
        ],
        "pools": [
            {
                "id": id_str(pool.id),
                "listener_id": None if pool.listener_id is None else id_str(pool.listener_id),
                "status": pool.status.name,
                "members": [{"id": id_str(m.id), "status": m.status.name} for m in pool.members],
            }
            for pool in hb.pools
        ],
    }


def build_vectors() -> dict[str, Any]:
    accepted = []
    for name, datagram in accepted_cases():
        hb = octavia.decode(datagram, KEY, received_at_ms=RECEIVED_AT_MS)
        accepted.append(
            {
                "name": name,
                "datagram_hex": datagram.hex(),
                "expected": heartbeat_as_json(hb),
            }
        )
    rejected = [
        {"name": name, "datagram_hex": datagram.hex(), "reason": reason.value}
        for name, datagram, reason in rejected_cases()
    ]
    return {
        "description": (
            "Octavia heartbeat envelope: zlib(JSON) followed by HMAC-SHA256 of the "
            "compressed bytes, as 64 lowercase hex characters or 32 raw bytes. "
            "key_hex is the UTF-8 encoding of Octavia's heartbeat_key. Decode every "
            "accepted datagram with received_at_ms and compare with expected (ids as "
            "UUID strings, states by enum name, pools and listeners in message order); "
            "every rejected datagram must fail with the given reason. "
            "See docs/octavia-compat.md."
        ),
        "key_text": KEY_TEXT,
        "key_hex": KEY.hex(),
        "received_at_ms": RECEIVED_AT_MS,
        "limits": {
            "max_datagram_bytes": octavia.MAX_DATAGRAM,
            "max_json_bytes": octavia.MAX_JSON_BYTES,
            "max_listeners": octavia.MAX_LISTENERS,
        },
        "accepted": accepted,
        "rejected": rejected,
    }


# --- tests over the checked-in file -----------------------------------------
def _load() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


FILE = _load() if VECTORS.exists() else {"accepted": [], "rejected": []}


def test_file_has_every_version_and_digest_form() -> None:
    names = {v["name"] for v in FILE["accepted"]}
    assert {"v3_seed_hex_digest", "v3_seed_raw_digest"} <= names
    assert any(n.startswith("v2_") for n in names)
    assert any(n.startswith("v1_no_ver") for n in names)
    reasons = {v["reason"] for v in FILE["rejected"]}
    assert {"bad_signature", "malformed", "over_limit", "bad_version"} <= reasons


@pytest.mark.parametrize("vector", FILE["accepted"], ids=lambda v: v["name"])
def test_accepted_vector(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(FILE["key_hex"])
    hb = octavia.decode(
        bytes.fromhex(vector["datagram_hex"]), key, received_at_ms=FILE["received_at_ms"]
    )
    assert heartbeat_as_json(hb) == vector["expected"]


@pytest.mark.parametrize("vector", FILE["rejected"], ids=lambda v: v["name"])
def test_rejected_vector(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(FILE["key_hex"])
    with pytest.raises(Rejected) as caught:
        octavia.decode(
            bytes.fromhex(vector["datagram_hex"]), key, received_at_ms=FILE["received_at_ms"]
        )
    assert caught.value.reason.value == vector["reason"]


def test_generator_agrees_with_the_checked_in_file() -> None:
    # Datagram bytes may differ with another zlib build; the meaning may not.
    fresh = build_vectors()
    assert [v["name"] for v in fresh["accepted"]] == [v["name"] for v in FILE["accepted"]]
    assert [v["expected"] for v in fresh["accepted"]] == [v["expected"] for v in FILE["accepted"]]
    assert [(v["name"], v["reason"]) for v in fresh["rejected"]] == [
        (v["name"], v["reason"]) for v in FILE["rejected"]
    ]


def test_key_text_is_the_key() -> None:
    assert FILE["key_text"].encode("utf-8").hex() == FILE["key_hex"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_vectors_octavia.py --write")
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(build_vectors(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {VECTORS}")

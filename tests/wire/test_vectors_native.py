"""Golden vectors for the native format (schema/vectors/native.json).

The tests read the checked-in file and check the code against it: key
derivation, accepted datagrams (decoded value, and re-encoding for canonical
ones), rejected datagrams with their reason, replay-window and freshness cases.
The generator below wrote it; regenerate only when the contract changes:

    .venv/bin/python tests/wire/test_vectors_native.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from healthmgr.wire import envelope, limits
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.ids import id_bytes, id_str
from healthmgr.wire.keys import Keyring, MasterKey, derive_amphora_key
from healthmgr.wire.native import decode_native, encode_native
from healthmgr.wire.replay import ReplayGuard, check_freshness
from healthmgr.wire.values import Heartbeat

VECTORS = Path(__file__).resolve().parents[2] / "schema" / "vectors" / "native.json"


def heartbeat_json(hb: Heartbeat) -> dict[str, Any]:
    return {
        "amphora_id": id_str(hb.amphora_id),
        "seq": hb.seq,
        "sent_at_ms": hb.sent_at_ms,
        "interval_ms": hb.interval_ms,
        "counters_epoch": hb.counters_epoch,
        "listeners": [
            {
                "id": id_str(lis.id),
                "status": lis.status.name,
                "current_connections": lis.current_connections,
                "bytes_in": lis.bytes_in,
                "bytes_out": lis.bytes_out,
                "total_connections": lis.total_connections,
                "request_errors": lis.request_errors,
            }
            for lis in hb.listeners
        ],
        "pools": [
            {
                "id": id_str(pool.id),
                "listener_id": id_str(pool.listener_id) if pool.listener_id else None,
                "status": pool.status.name,
                "members": [{"id": id_str(m.id), "status": m.status.name} for m in pool.members],
            }
            for pool in hb.pools
        ],
    }


def load() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def keyring_of(vectors: dict[str, Any]) -> Keyring:
    masters = [MasterKey(m["id"], bytes.fromhex(m["secret_hex"])) for m in vectors["master_keys"]]
    return Keyring(masters, active_id=None)


def datagram_of(case: dict[str, Any]) -> bytes:
    data = bytes.fromhex(case["datagram_hex"])
    return data.ljust(case.get("zero_pad_to", 0), b"\0")


# -- tests ---------------------------------------------------------------------
def test_derived_keys():
    vectors = load()
    masters = {
        m["id"]: MasterKey(m["id"], bytes.fromhex(m["secret_hex"])) for m in vectors["master_keys"]
    }
    for case in vectors["derived_keys"]:
        key = derive_amphora_key(masters[case["key_id"]], id_bytes(case["amphora_id"]))
        assert key.hex() == case["key_hex"], case
        assert (
            case["hkdf_info_hex"]
            == (b"amphora" + case["key_id"].to_bytes(2, "big") + id_bytes(case["amphora_id"])).hex()
        )


@pytest.mark.parametrize("case", load()["accepted"], ids=lambda c: c["name"])
def test_accepted(case):
    ring = keyring_of(load())
    datagram = datagram_of(case)
    hb = decode_native(datagram, ring)
    assert heartbeat_json(hb) == case["expected"]
    if case["canonical"]:
        key_id = int.from_bytes(datagram[4:6], "big")
        assert encode_native(hb, key_id, ring.key_for(key_id, hb.amphora_id)) == datagram


@pytest.mark.parametrize("case", load()["rejected"], ids=lambda c: c["name"])
def test_rejected(case):
    with pytest.raises(Rejected) as info:
        decode_native(datagram_of(case), keyring_of(load()))
    assert info.value.reason.value == case["reason"]


@pytest.mark.parametrize("case", load()["replay_window"], ids=lambda c: c["name"])
def test_replay_window(case):
    guard = ReplayGuard(width=case["width"])
    results = []
    for seq in case["seqs"]:
        try:
            guard.check_and_update(b"\0" * 16, seq)
            results.append("accept")
        except Rejected as exc:
            results.append(exc.reason.value)
    assert results == case["results"]


@pytest.mark.parametrize("case", load()["freshness"], ids=lambda c: c["name"])
def test_freshness(case):
    bounds = {"max_age_ms": case["max_age_ms"], "max_future_ms": case["max_future_ms"]}
    if case["result"] == "accept":
        check_freshness(case["sent_at_ms"], case["now_ms"], **bounds)
    else:
        with pytest.raises(Rejected) as info:
            check_freshness(case["sent_at_ms"], case["now_ms"], **bounds)
        assert info.value.reason.value == case["result"]


def test_every_native_reason_has_a_vector():
    reasons = {case["reason"] for case in load()["rejected"]}
    # The others are the manager's state, not the codec's (replay, clock, fleet).
    manager = {Reason.REPLAYED, Reason.STALE, Reason.FUTURE, Reason.UNLISTED, Reason.DOWNGRADE}
    envelope_and_payload = set(Reason) - manager
    assert {r.value for r in envelope_and_payload} <= reasons


# -- generator -------------------------------------------------------------------
def _generate() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.wire import native_samples as s

    masters = [s.MASTER, s.MASTER_2]
    ring = Keyring(masters, active_id=1)
    other = s.uid(7)

    def enc(hb: Heartbeat, key_id: int = 1) -> bytes:
        return encode_native(hb, key_id, ring.key_for(key_id, hb.amphora_id))

    def sign_raw(raw: bytes, key_id: int = 1) -> bytes:
        return envelope.seal(key_id, s.AMPHORA, raw, ring.key_for(key_id, s.AMPHORA))

    def sign(payload: Any) -> bytes:
        return sign_raw(msgpack.packb(payload, use_bin_type=True))

    base = [s.AMPHORA, 5, s.SENT_AT_MS, 10_000, 7, [], []]
    lis = [s.LISTENER, 1, 0, 0, 0, 0, 0]

    def with_(index: int, value: Any) -> list[Any]:
        out = list(base)
        out[index] = value
        return out

    seed = enc(s.seed())
    tampered = bytearray(seed)
    tampered[-1] ^= 0x01
    body_flip = bytearray(seed)
    body_flip[30] ^= 0x80
    noncanonical = msgpack.packb(base, use_bin_type=True).replace(
        b"\xcd\x27\x10", b"\xcf" + (10_000).to_bytes(8, "big"), 1
    )
    accepted = [
        ("seed", seed, True),
        ("seed_rotated_key_2", enc(s.seed(), 2), True),
        ("no_listeners", enc(s.seed(listeners=(), pools=())), True),
        ("large_10x10", enc(s.large()), True),
        ("max_counters", enc(s.seed(seq=2**64 - 1, counters_epoch=2**64 - 1)), True),
        (
            "unknown_status_codes_are_other",
            sign(
                [
                    *base[:5],
                    [[s.LISTENER, 77, 0, 0, 0, 0, 0]],
                    [[s.POOL, s.LISTENER, 200, [[s.MEMBER_1, 255]]]],
                ]
            ),
            False,
        ),
        ("non_canonical_integer_width", sign_raw(noncanonical), False),
    ]
    member = [s.MEMBER_1, 1]
    other_key = ring.key_for(1, other)
    pool = [s.POOL, s.LISTENER, 1]
    many_listeners = [[s.uid(i), 1, 0, 0, 0, 0, 0] for i in range(limits.MAX_LISTENERS + 1)]
    reject: list[tuple[str, bytes, str]] = [
        ("empty", b"", "bad_magic"),
        ("octavia_zlib", b"\x78\x9c" + seed[2:], "bad_magic"),
        ("version_2", b"AHB\x02" + seed[4:], "bad_version"),
        ("magic_only", b"AHB", "malformed"),
        ("header_only", seed[:22], "malformed"),
        ("no_payload", seed[:22] + seed[-32:], "malformed"),
        ("unknown_key_id", seed[:4] + b"\x00\x09" + seed[6:], "unknown_key"),
        ("tag_bit_flipped", bytes(tampered), "bad_signature"),
        ("payload_bit_flipped", bytes(body_flip), "bad_signature"),
        ("tag_truncated", seed[:-1], "bad_signature"),
        ("byte_appended", seed + b"\x00", "bad_signature"),
        ("key_of_other_amphora", encode_native(s.seed(), 1, other_key), "bad_signature"),
        ("signed_by_key_2_header_says_1", seed[:6] + enc(s.seed(), 2)[6:], "bad_signature"),
        ("payload_not_msgpack", sign_raw(b"\xc1"), "malformed"),
        ("payload_truncated_msgpack", sign_raw(b"\x97\x01"), "malformed"),
        ("payload_trailing_bytes", sign_raw(msgpack.packb(base) + b"\x00"), "malformed"),
        ("payload_map", sign({"id": s.AMPHORA}), "malformed"),
        ("payload_6_elements", sign(base[:6]), "malformed"),
        ("amphora_id_mismatch", sign(with_(0, other)), "malformed"),
        ("amphora_id_as_str", sign(with_(0, "x" * 16)), "malformed"),
        ("id_bin_17_bytes", sign(with_(0, s.AMPHORA + b"\0")), "malformed"),
        ("negative_seq", sign(with_(1, -1)), "malformed"),
        ("float_sent_at", sign(with_(2, 1.5)), "malformed"),
        ("zero_interval", sign(with_(3, 0)), "malformed"),
        ("bool_epoch", sign(with_(4, True)), "malformed"),
        ("listener_id_15_bytes", sign(with_(5, [[s.LISTENER[:15], *lis[1:]]])), "malformed"),
        ("listener_status_256", sign(with_(5, [[s.LISTENER, 256, 0, 0, 0, 0, 0]])), "malformed"),
        ("listener_negative", sign(with_(5, [[s.LISTENER, 1, 0, -5, 0, 0, 0]])), "malformed"),
        ("duplicate_listener", sign(with_(5, [lis, lis])), "malformed"),
        ("pool_listener_nil", sign(with_(6, [[s.POOL, None, 1, []]])), "malformed"),
        ("member_3_elements", sign(with_(6, [[*pool, [[*member, 0]]]])), "malformed"),
        ("duplicate_member", sign(with_(6, [[*pool, [member, member]]])), "malformed"),
        ("nested_too_deep", sign_raw(b"\x91" * 40 + b"\x00"), "malformed"),
        ("too_many_listeners", sign(with_(5, many_listeners)), "over_limit"),
        ("array_over_parser_bound", sign(with_(5, [0] * (limits.MAX_ARRAY_LEN + 1))), "over_limit"),
    ]  # fmt: skip
    oversized = {
        "name": "oversized",
        "datagram_hex": "41484201",
        "zero_pad_to": limits.MAX_DATAGRAM_BYTES + 1,
        "reason": "over_limit",
    }
    rejected = [oversized] + [
        {"name": name, "datagram_hex": data.hex(), "reason": why} for name, data, why in reject
    ]
    return {
        "description": (
            "Native heartbeat format, version 1 (schema/heartbeat.md). master_keys: "
            "secret bytes as hex (the UTF-8 of the configured secret). derived_keys: "
            "HKDF-SHA256 per amphora. accepted: decode datagram_hex with a keyring of all "
            "master keys and compare with expected (ids as UUID strings, states by enum "
            "name); canonical ones must re-encode to the same bytes. rejected: decoding "
            "must fail with reason (zero_pad_to: append zero bytes up to that length). "
            "replay_window: feed seqs in order to one fresh window of the given width. "
            "freshness: sent_at_ms against the receiver's now_ms."
        ),
        "version": 1,
        "hkdf": {
            "hash": "SHA-256",
            "salt_text": envelope_salt(),
            "info": "ASCII 'amphora' || key_id uint16 big-endian || amphora id (16 bytes)",
            "length": 32,
        },
        "master_keys": [{"id": m.id, "secret_hex": m.secret.hex()} for m in masters],
        "derived_keys": [
            {
                "key_id": m.id,
                "amphora_id": id_str(amphora),
                "hkdf_info_hex": (b"amphora" + m.id.to_bytes(2, "big") + amphora).hex(),
                "key_hex": derive_amphora_key(m, amphora).hex(),
            }
            for m in masters
            for amphora in (s.AMPHORA, other)
        ],
        "accepted": [
            {
                "name": name,
                "canonical": canonical,
                "datagram_hex": data.hex(),
                "expected": heartbeat_json(decode_native(data, ring)),
            }
            for name, data, canonical in accepted
        ],
        "rejected": rejected,
        "replay_window": [
            {
                "name": "duplicates_and_reordering",
                "width": 64,
                "seqs": [100, 101, 101, 99, 99, 38, 37, 165, 101, 102, 2**64 - 1, 165],
                "results": [
                    "accept",
                    "accept",
                    "replayed",
                    "accept",
                    "replayed",
                    "accept",
                    "replayed",
                    "accept",
                    "replayed",
                    "accept",
                    "accept",
                    "replayed",
                ],
            },
            {
                "name": "first_seq_zero",
                "width": 64,
                "seqs": [0, 0, 1],
                "results": ["accept", "replayed", "accept"],
            },
        ],
        "freshness": [
            {
                "name": n,
                "sent_at_ms": sent,
                "now_ms": 1_767_225_600_000,
                "max_age_ms": 30_000,
                "max_future_ms": 10_000,
                "result": r,
            }
            for n, sent, r in [
                ("on_time", 1_767_225_600_000, "accept"),
                ("oldest_accepted", 1_767_225_570_000, "accept"),
                ("one_ms_too_old", 1_767_225_569_999, "stale"),
                ("furthest_future_accepted", 1_767_225_610_000, "accept"),
                ("one_ms_too_far_ahead", 1_767_225_610_001, "future"),
            ]
        ],
    }


def envelope_salt() -> str:
    from healthmgr.wire.keys import HKDF_SALT

    return HKDF_SALT.decode("ascii")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_vectors_native.py --write")
    VECTORS.write_text(json.dumps(_generate(), indent=2) + "\n")
    print(f"wrote {VECTORS}")

"""Wire codec benchmark: microseconds per verify+decode, native vs Octavia format.

    .venv/bin/python tests/bench/wire.py [--seconds 0.1] [--repeat 15]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python tests/bench/wire.py --loop native-seed 5000


Prints one JSON object. Each figure is the best of --repeat timed loops of
about --seconds each; the native and Octavia loops alternate, so load from
other processes disturbs both alike, and the minimum is the least disturbed.
On a shared machine the times still vary; ``--loop CASE N`` only decodes N
times (no timing, no output) so that an instruction counter such as callgrind
gives a figure independent of load: instructions per decode are
(Ir of N loops - Ir of 0 loops) / N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import timeit
import uuid
from collections.abc import Callable

from healthmgr.wire import octavia
from healthmgr.wire.keys import Keyring, MasterKey
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

SENT_AT_MS = 1_767_225_600_000  # 2026-01-01


def _id() -> bytes:
    return uuid.uuid4().bytes


def make_heartbeat(listeners: int, members_per_pool: int) -> Heartbeat:
    """One pool per listener; realistic counter magnitudes (they set msgpack widths)."""
    lis = tuple(
        ListenerReport(
            _id(), ListenerState.OPEN, 120, 9_876_543_210, 123_456_789_012, 4_000_000, 17
        )
        for _ in range(listeners)
    )
    pools = tuple(
        PoolReport(
            _id(),
            listener.id,
            PoolState.UP,
            tuple(
                MemberReport(_id(), MemberState.UP if i % 5 else MemberState.DOWN)
                for i in range(members_per_pool)
            ),
        )
        for listener in lis
    )
    return Heartbeat(
        _id(), SENT_AT_MS, SENT_AT_MS, 10_000, (1_767_000_000 << 22) | 4242, lis, pools
    )


def best_us(
    funcs: dict[str, Callable[[], object]], seconds: float, repeat: int
) -> dict[str, float]:
    """Best microseconds per call of each function, timed loops interleaved."""
    timers = {name: timeit.Timer(func) for name, func in funcs.items()}
    numbers = {}
    for name, timer in timers.items():
        number, elapsed = timer.autorange()
        numbers[name] = max(1, int(number * seconds / elapsed))
    best = dict.fromkeys(funcs, float("inf"))
    for _ in range(repeat):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(numbers[name]) / numbers[name] * 1e6)
    return best


def measure(hb: Heartbeat, seconds: float, repeat: int) -> dict[str, object]:
    keyring = Keyring([MasterKey(1, b"bench master secret 0123456789ab")], 1)
    key_id, key = keyring.provision(hb.amphora_id)
    native = encode_native(hb, key_id, key)
    octavia_key = b"insecure-shared-heartbeat-key"
    octa = octavia.encode(octavia.heartbeat_to_message(hb, 3), octavia_key)
    assert decode_native(native, keyring) == hb
    octavia.decode(octa, octavia_key, received_at_ms=SENT_AT_MS)
    keyring.key_for(key_id, hb.amphora_id)  # warm cache, as in steady state
    best = best_us(
        {
            "native": lambda: decode_native(native, keyring),
            "octavia": lambda: octavia.decode(octa, octavia_key, received_at_ms=SENT_AT_MS),
        },
        seconds,
        repeat,
    )
    native_us, octavia_us = best["native"], best["octavia"]
    return {
        "listeners": len(hb.listeners),
        "pools": len(hb.pools),
        "members": sum(len(p.members) for p in hb.pools),
        "native_bytes": len(native),
        "octavia_bytes": len(octa),
        "native_us": round(native_us, 2),
        "octavia_us": round(octavia_us, 2),
        "native_over_octavia": round(native_us / octavia_us, 3),
    }


CASES = {"seed": (1, 2), "large": (10, 10)}


def loop(case: str, count: int) -> None:
    fmt, _, size = case.partition("-")
    hb = make_heartbeat(*CASES[size])
    keyring = Keyring([MasterKey(1, b"bench master secret 0123456789ab")], 1)
    octavia_key = b"insecure-shared-heartbeat-key"
    if fmt == "native":
        native = encode_native(hb, *keyring.provision(hb.amphora_id))
        for _ in range(count):
            decode_native(native, keyring)
    else:
        octa = octavia.encode(octavia.heartbeat_to_message(hb, 3), octavia_key)
        for _ in range(count):
            octavia.decode(octa, octavia_key, received_at_ms=SENT_AT_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.1, help="time per timed loop")
    parser.add_argument("--repeat", type=int, default=15, help="timed loops; the best is kept")
    parser.add_argument(
        "--loop",
        nargs=2,
        metavar=("CASE", "N"),
        help="only decode CASE (native-seed, native-large, octavia-seed, octavia-large) N times",
    )
    args = parser.parse_args()
    if args.loop:
        loop(args.loop[0], int(args.loop[1]))
        return
    keyring = Keyring([MasterKey(1, b"bench master secret 0123456789ab")], 1, cache_size=1)
    miss = iter(range(10**9))
    derive_us = best_us(
        {"miss": lambda: keyring.key_for(1, next(miss).to_bytes(16, "big"))},
        args.seconds,
        args.repeat,
    )["miss"]
    result = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "seed": measure(make_heartbeat(1, 2), args.seconds, args.repeat),
        "large": measure(make_heartbeat(10, 10), args.seconds, args.repeat),
        "key_derivation_miss_us": round(derive_us, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

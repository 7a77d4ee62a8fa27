"""Heartbeat values shared by the native wire tests and the vector generator."""

from __future__ import annotations

import uuid

from healthmgr.wire.keys import Keyring, MasterKey
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
)

MASTER = MasterKey(1, b"test master secret, 32 bytes ok")
MASTER_2 = MasterKey(2, b"second master key, for rotation")
AMPHORA = uuid.UUID("6f0a1b2c-3d4e-4f50-8a61-72839405a6b7").bytes
LISTENER = uuid.UUID("11111111-1111-4111-8111-111111111111").bytes
POOL = uuid.UUID("22222222-2222-4222-8222-222222222222").bytes
MEMBER_1 = uuid.UUID("33333333-3333-4333-8333-333333333331").bytes
MEMBER_2 = uuid.UUID("33333333-3333-4333-8333-333333333332").bytes
SENT_AT_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def keyring() -> Keyring:
    return Keyring([MASTER, MASTER_2], active_id=1)


def seed(**changes: object) -> Heartbeat:
    """The seed scenario: one listener, one pool, web-1 UP and web-2 DOWN."""
    values: dict[str, object] = {
        "amphora_id": AMPHORA,
        "seq": SENT_AT_MS,
        "sent_at_ms": SENT_AT_MS,
        "interval_ms": 10_000,
        "counters_epoch": (1_767_225_000 << 22) | 4242,
        "listeners": (
            ListenerReport(LISTENER, ListenerState.OPEN, 3, 123_456, 7_890_123, 4_567, 2),
        ),
        "pools": (
            PoolReport(
                POOL,
                LISTENER,
                PoolState.UP,
                (MemberReport(MEMBER_1, MemberState.UP), MemberReport(MEMBER_2, MemberState.DOWN)),
            ),
        ),
    }
    values.update(changes)
    return Heartbeat(**values)  # type: ignore[arg-type]


def uid(n: int) -> bytes:
    return uuid.UUID(int=(0xABCD << 112) | n).bytes


def large(listeners: int = 10, members_per_pool: int = 10) -> Heartbeat:
    """One pool per listener, all with busy counters (the widest msgpack integers)."""
    lis = tuple(
        ListenerReport(uid(i), ListenerState.OPEN, 5000, 2**40 + i, 2**41 + i, 2**33, 2**20)
        for i in range(listeners)
    )
    pools = tuple(
        PoolReport(
            uid(1000 + i),
            lis[i].id,
            PoolState.UP,
            tuple(
                MemberReport(uid(100_000 + i * 1000 + j), MemberState(1 + j % 5))
                for j in range(members_per_pool)
            ),
        )
        for i in range(listeners)
    )
    return seed(listeners=lis, pools=pools)

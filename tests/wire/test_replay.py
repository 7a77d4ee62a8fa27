"""Replay window and freshness bound."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.replay import (
    ReplayGuard,
    ReplayWindow,
    alive_at_ms,
    check_freshness,
)

A, B = b"a" * 16, b"b" * 16


def accepted(guard: ReplayGuard, amphora: bytes, seq: int) -> bool:
    try:
        guard.check_and_update(amphora, seq)
    except Rejected as exc:
        assert exc.reason is Reason.REPLAYED
        return False
    return True


def test_fresh_numbers_once_duplicates_never():
    guard = ReplayGuard()
    assert [accepted(guard, A, s) for s in (5, 6, 6, 7, 5)] == [True, True, False, True, False]


def test_first_number_can_be_anything_and_zero_works():
    guard = ReplayGuard()
    assert accepted(guard, A, 0) and not accepted(guard, A, 0)
    assert accepted(guard, B, 1_767_225_600_000)


def test_reordering_within_the_window_is_accepted_once():
    guard = ReplayGuard(width=64)
    assert accepted(guard, A, 100)
    assert accepted(guard, A, 37)  # 63 behind: the oldest slot
    assert not accepted(guard, A, 36)  # 64 behind: too old, counted as a replay
    assert accepted(guard, A, 99) and not accepted(guard, A, 99)


def test_newest_flag_tells_late_heartbeats_apart():
    guard = ReplayGuard()
    assert guard.check_and_update(A, 10) is True
    assert guard.check_and_update(A, 8) is False
    assert guard.check_and_update(A, 11) is True
    assert guard.highest(A) == 11 and guard.highest(B) is None


def test_amphorae_are_independent_and_forgettable():
    guard = ReplayGuard()
    assert accepted(guard, A, 1) and accepted(guard, B, 1)
    assert len(guard) == 2 and A in guard
    guard.forget(A)
    assert A not in guard and accepted(guard, A, 1)


def test_check_does_not_commit():
    guard = ReplayGuard()
    guard.check(A, 3)
    guard.check(A, 3)
    assert guard.commit(A, 3) is True
    with pytest.raises(Rejected):
        guard.check(A, 3)


def test_huge_jump_does_not_build_a_huge_bitmap():
    window = ReplayWindow()
    window.commit(1)
    window.commit(2**63)  # a naive shift would allocate 2**63 bits
    assert window.bits == 1 and sys.getsizeof(window.bits) < 64
    window.check(2**63 - 1)
    with pytest.raises(Rejected):
        window.check(1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=200), st.integers(1, 130))
def test_window_matches_a_reference_model(seqs, width):
    guard = ReplayGuard(width=width)
    seen: set[int] = set()
    top = -1
    for seq in seqs:
        expected = seq not in seen and seq > top - width
        assert accepted(guard, A, seq) is expected
        if expected:
            seen.add(seq)
            top = max(top, seq)


def test_freshness_bounds():
    now = 1_000_000
    check_freshness(now - 30_000, now, max_age_ms=30_000, max_future_ms=10_000)
    check_freshness(now + 10_000, now, max_age_ms=30_000, max_future_ms=10_000)
    with pytest.raises(Rejected) as old:
        check_freshness(now - 30_001, now, max_age_ms=30_000, max_future_ms=10_000)
    assert old.value.reason is Reason.STALE
    with pytest.raises(Rejected) as ahead:
        check_freshness(now + 10_001, now, max_age_ms=30_000, max_future_ms=10_000)
    assert ahead.value.reason is Reason.FUTURE


def test_alive_at_is_never_later_than_the_send_time():
    assert alive_at_ms(1000, 5000) == 1000  # a replay proves only the original send time
    assert alive_at_ms(5500, 5000) == 5000  # a sender clock ahead proves only the arrival


def test_window_memory_is_small():
    window = ReplayWindow()
    window.commit(1_767_225_600_000)
    window.commit(1_767_225_600_063)
    size = sys.getsizeof(window) + sys.getsizeof(window.top) + sys.getsizeof(window.bits)
    assert size < 160

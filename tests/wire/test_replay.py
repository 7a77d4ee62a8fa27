"""Replay window and freshness bound."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.replay import (
    OctaviaArrival,
    OctaviaSequences,
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


# -- Octavia's sequence: duplicates, reordering, restarts ----------------------

NEWEST, REORDERED, RESTART = OctaviaArrival.NEWEST, OctaviaArrival.REORDERED, OctaviaArrival.RESTART
DUP_MS = 5_000
INTERVAL = 10_000  # Octavia's default heartbeat_interval, in ms


def octavia(seqs: OctaviaSequences, seq: int, at_ms: int, amphora: bytes = A) -> object:
    """The arrival class, or "replayed"."""
    try:
        return seqs.check_and_update(amphora, seq, at_ms)
    except Rejected as exc:
        assert exc.reason is Reason.REPLAYED
        return "replayed"


def run(seqs: OctaviaSequences, first_seq: int, count: int, start_ms: int) -> list[object]:
    return [octavia(seqs, first_seq + i, start_ms + i * INTERVAL) for i in range(count)]


def test_octavia_rising_sequence_is_always_newest():
    seqs = OctaviaSequences(DUP_MS)
    assert run(seqs, 0, 5, 0) == [NEWEST] * 5
    assert seqs.highest(A) == 4


@pytest.mark.parametrize("old_run", [3, 63, 64, 5_000])
def test_octavia_restart_is_accepted_at_once_whatever_the_old_highest(old_run: int):
    seqs = OctaviaSequences(DUP_MS)
    run(seqs, 0, 1, 0)
    seqs.check_and_update(A, old_run, INTERVAL)  # the old run got this far
    # The agent restarts: its next heartbeat is seq 0, one interval later.
    assert octavia(seqs, 0, 2 * INTERVAL) is RESTART
    assert run(seqs, 1, 3, 3 * INTERVAL) == [NEWEST] * 3
    assert seqs.highest(A) == 3


def test_octavia_restart_first_seen_at_a_high_sequence_is_accepted():
    # Several managers (round robin) or a partition: the first heartbeat of the
    # new run this manager sees may be far into it, still below the old highest.
    seqs = OctaviaSequences(DUP_MS)
    run(seqs, 0, 1, 0)
    seqs.check_and_update(A, 800, INTERVAL)
    assert octavia(seqs, 500, 2 * INTERVAL) is RESTART
    assert octavia(seqs, 501, 3 * INTERVAL) is NEWEST


def test_octavia_network_duplicate_is_replayed_once_or_many_times():
    seqs = OctaviaSequences(DUP_MS)
    assert octavia(seqs, 7, 1_000) is NEWEST
    assert octavia(seqs, 7, 1_001) == "replayed"
    assert octavia(seqs, 7, 1_000 + DUP_MS - 1) == "replayed"
    assert octavia(seqs, 8, 11_000) is NEWEST


def test_octavia_duplicate_of_a_reordered_heartbeat_is_replayed():
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 5, 0)
    octavia(seqs, 7, 100)
    assert octavia(seqs, 6, 200) is REORDERED
    assert octavia(seqs, 6, 300) == "replayed"
    assert seqs.highest(A) == 7


def test_octavia_reordered_heartbeat_is_accepted_but_not_newest():
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 10, 0)
    assert octavia(seqs, 9, 50) is REORDERED
    assert seqs.highest(A) == 10
    assert octavia(seqs, 11, INTERVAL) is NEWEST


def test_octavia_same_sequence_after_the_duplicate_window_is_a_restart():
    # Nothing tells this from a replay of a captured heartbeat (documented).
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 3, 0)
    assert octavia(seqs, 3, DUP_MS) is RESTART
    assert octavia(seqs, 1, DUP_MS + INTERVAL) is RESTART


def test_octavia_restart_right_after_the_highest_is_reordered_then_a_restart():
    # An agent restarting within the window: its first heartbeat is taken as a
    # reordered one (accepted, statuses not applied), the next as the restart.
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 40, 0)
    assert octavia(seqs, 0, 2_000) is REORDERED
    assert octavia(seqs, 1, 2_000 + INTERVAL) is RESTART
    assert octavia(seqs, 2, 2_000 + 2 * INTERVAL) is NEWEST


def test_octavia_new_run_does_not_collide_with_the_old_runs_numbers():
    # Crash loop: the old run's seq 0 arrived less than the window before the
    # new run's seq 0. That one is dropped as a duplicate; the run goes on.
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 0, 0)
    assert octavia(seqs, 0, 3_000) == "replayed"
    assert octavia(seqs, 1, 3_000 + INTERVAL) is NEWEST


def test_octavia_clock_stepping_back_is_time_gone_by():
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 9, 100_000)
    assert octavia(seqs, 0, 50_000) is RESTART
    assert octavia(seqs, 9, 50_001) is NEWEST  # the old 9 is not a duplicate any more


def test_octavia_amphorae_are_independent_and_forgettable():
    seqs = OctaviaSequences(DUP_MS)
    octavia(seqs, 5, 0, A)
    assert octavia(seqs, 5, 1, B) is NEWEST
    assert len(seqs) == 2
    seqs.forget(A)
    assert octavia(seqs, 5, 2, A) is NEWEST and seqs.highest(B) == 5
    assert seqs.highest(b"x" * 16) is None


def test_octavia_recent_list_stays_bounded():
    seqs = OctaviaSequences(10**9, recent_max=4)
    for seq in range(100):
        octavia(seqs, seq, seq)
    assert len(seqs._runs[A].recent) == 4


def test_octavia_sequences_need_sane_parameters():
    with pytest.raises(ValueError):
        OctaviaSequences(-1)
    with pytest.raises(ValueError):
        OctaviaSequences(10, recent_max=0)

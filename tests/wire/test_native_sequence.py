"""Restart-safe sequence numbers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from healthmgr.wire.sequence import SequenceState, resume, take


def test_reserves_before_the_first_number_and_every_block():
    state = resume(None, floor=100)
    seq, state, reserve = take(state, block=3)
    assert (seq, reserve) == (100, 103)
    out = []
    for _ in range(4):
        seq, state, reserve = take(state, block=3)
        out.append((seq, reserve))
    assert out == [(101, None), (102, None), (103, 106), (104, None)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=12), st.integers(1, 5), st.integers(0, 50))
def test_no_crash_point_reopens_or_lowers_numbers(run_lengths, block, clock):
    """Crash after any number of sends (the file holds what was stored): strictly increasing."""
    stored: int | None = None
    sent: list[int] = []
    for length in run_lengths:
        state = resume(stored, floor=clock)
        for _ in range(length):
            seq, state, reserve = take(state, block)
            if reserve is not None:
                stored = reserve  # stored durably before the send
            sent.append(seq)
        clock = max(0, clock - 7)  # even a clock going backwards changes nothing
    assert sent == sorted(set(sent))
    assert all(seq < (stored or 0) for seq in sent)


def test_clock_floor_covers_a_lost_file():
    assert resume(None, floor=5000) == SequenceState(5000, 5000)
    assert resume(9000, floor=5000).next_seq == 9000

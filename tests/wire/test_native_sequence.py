"""Restart-safe sequence numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmgr.wire.sequence import (
    PersistentSequence,
    SequenceState,
    load_reservation,
    resume,
    store_reservation,
    take,
)


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


def test_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "seq"
    assert load_reservation(path) is None
    store_reservation(path, 12345)
    assert load_reservation(path) == 12345
    assert path.read_text() == "12345\n"
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]  # no temp file left
    path.write_text("garbage")
    with pytest.raises(ValueError, match="expected one unsigned decimal integer"):
        load_reservation(path)
    with pytest.raises(ValueError):
        store_reservation(path, -1)


def test_persistent_sequence_survives_restarts(tmp_path):
    path = tmp_path / "seq"
    first = PersistentSequence(path, floor=10, block=4)
    numbers = [first.next() for _ in range(6)]
    second = PersistentSequence(path, floor=0, block=4)
    after = second.next()
    assert numbers == [10, 11, 12, 13, 14, 15]
    assert after > numbers[-1] and load_reservation(path) > after


def test_unwritable_reservation_hands_out_nothing(tmp_path):
    seq = PersistentSequence(tmp_path / "missing-dir" / "seq", floor=1, block=2)
    with pytest.raises(OSError):
        seq.next()
    assert seq.state.next_seq == 1

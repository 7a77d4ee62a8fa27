"""The agent's sequence reservation file (moved with the code from tests/wire)."""

from __future__ import annotations

import pytest

from agent.seqfile import PersistentSequence, load_reservation, store_reservation


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

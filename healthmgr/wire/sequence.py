"""Heartbeat sequence numbers that survive agent restarts.

A reservation scheme: before the agent sends a number it has durably stored a
high-water mark ``reserved`` above it, in blocks, so a restart resumes from the
stored mark, above every number ever sent. Numbers never repeat (no heartbeat
reopens an old number) and never go backwards (no restart makes heartbeats look
like replays to a manager's window). A floor from the clock (Unix time in ms)
also covers a lost or unreadable file. Spec: schema/heartbeat.md, "Sequence".

Pure state (:class:`SequenceState`, :func:`resume`, :func:`take`) plus
:func:`load_reservation` / :func:`store_reservation` for the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from healthmgr.wire.limits import DEFAULT_SEQ_BLOCK, MAX_UINT64


@dataclass(frozen=True, slots=True)
class SequenceState:
    next_seq: int  # the number the next heartbeat gets
    reserved: int  # stored mark: every number below it may have been sent


def resume(stored: int | None, *, floor: int = 0) -> SequenceState:
    """State at agent start from the stored reservation (None: no file) and a floor.

    The floor is normally the current Unix time in milliseconds.
    """
    start = max(stored or 0, floor, 0)
    return SequenceState(next_seq=start, reserved=start)


def take(
    state: SequenceState, block: int = DEFAULT_SEQ_BLOCK
) -> tuple[int, SequenceState, int | None]:
    """(seq to send, next state, reservation to store first or None).

    When the third item is not None, store it durably *before* sending seq, and
    keep the old state if storing fails (retry later; send nothing unreserved).
    """
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    seq = state.next_seq
    if seq >= MAX_UINT64:
        raise OverflowError("sequence numbers exhausted (uint64)")
    if seq < state.reserved:
        return seq, SequenceState(seq + 1, state.reserved), None
    reserved = min(seq + block, MAX_UINT64)
    return seq, SequenceState(seq + 1, reserved), reserved


def load_reservation(path: str | os.PathLike[str]) -> int | None:
    """The stored reservation, or None when the file does not exist.

    Raises ValueError naming the file when it holds anything but one decimal
    integer (the agent then logs it and resumes from the clock floor).
    """
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the sequence reservation: {exc}") from None
    value = text.strip()
    if not value.isdigit() or int(value) > MAX_UINT64:
        raise ValueError(f"{path}: expected one unsigned decimal integer, found {text[:40]!r}")
    return int(value)


def store_reservation(path: str | os.PathLike[str], reserved: int) -> None:
    """Store atomically and durably: temp file in the same directory, fsync, rename, fsync dir."""
    if not 0 <= reserved <= MAX_UINT64:
        raise ValueError(f"reservation {reserved} is outside 0..2**64-1")
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{reserved}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


class PersistentSequence:
    """The agent's sequence: ``next()`` returns a number that is safe to send.

    Wraps the pure functions around a file; ``next()`` raises OSError when the
    reservation cannot be stored, and then hands out nothing. An unreadable
    file is replaced (the clock ``floor`` covers it) and said in ``warning``.
    """

    def __init__(self, path: str | os.PathLike[str], *, floor: int, block: int = DEFAULT_SEQ_BLOCK):
        self.path = Path(path)
        self.block = block
        self.warning: str | None = None
        try:
            stored = load_reservation(self.path)
        except ValueError as exc:
            stored = None
            self.warning = f"{exc}; resuming from the clock"
        self.state = resume(stored, floor=floor)

    def next(self) -> int:
        seq, state, reserve = take(self.state, self.block)
        if reserve is not None:
            store_reservation(self.path, reserve)
        self.state = state
        return seq

"""The agent's sequence reservation file: the I/O around healthmgr.wire.sequence.

One decimal integer and a newline, stored atomically and durably before any
number at or above the previous mark is sent (schema/heartbeat.md, "Sequence").
"""

from __future__ import annotations

import os
from pathlib import Path

from healthmgr.wire.limits import DEFAULT_SEQ_BLOCK, MAX_UINT64
from healthmgr.wire.sequence import resume, take


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

"""Heartbeat sequence numbers that survive agent restarts.

A reservation scheme: before the agent sends a number it has durably stored a
high-water mark ``reserved`` above it, in blocks, so a restart resumes from the
stored mark, above every number ever sent. Numbers never repeat (no heartbeat
reopens an old number) and never go backwards (no restart makes heartbeats look
like replays to a manager's window). A floor from the clock (Unix time in ms)
also covers a lost or unreadable file. Spec: schema/heartbeat.md, "Sequence".

Pure state only (:class:`SequenceState`, :func:`resume`, :func:`take`); the
file that holds the reservation is the agent's (``agent/seqfile.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

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

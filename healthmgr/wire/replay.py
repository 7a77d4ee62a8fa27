"""Replay protection: a per-amphora sliding window over seq, and a freshness bound.

Pure state, no clock and no I/O: the receiver passes its own time in. Order in
the manager, after ``decode_native`` verified the tag (a forged datagram must
never move a window): ``check_freshness`` then ``ReplayGuard.check_and_update``.
Rules and their reasons: schema/heartbeat.md, "Replay and freshness".

Octavia's format has no send time and its agent restarts its sequence at 0:
:class:`OctaviaSequences` only tells duplicates, reordering and restarts apart
(docs/octavia-compat.md).
"""

from __future__ import annotations

import enum

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.limits import REPLAY_WINDOW


class ReplayWindow:
    """RFC 6479-style window: the highest seq seen and a bitmap of the ones below.

    Bit ``i`` of ``bits`` says ``top - i`` was accepted (bit 0 is ``top``).
    A seq more than ``width - 1`` below ``top`` is too old to tell apart from a
    replay and is rejected as REPLAYED. Two machine words per amphora.
    """

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = -1  # nothing seen yet: any seq >= 0 is new
        self.bits = 0

    def check(self, seq: int, width: int = REPLAY_WINDOW) -> None:
        """Raise ``Rejected(REPLAYED)`` if ``seq`` was seen or is below the window."""
        if seq > self.top:
            return
        behind = self.top - seq
        if behind >= width:
            raise Rejected(Reason.REPLAYED, f"seq {seq} is {behind} behind {self.top}: too old")
        if (self.bits >> behind) & 1:
            raise Rejected(Reason.REPLAYED, f"seq {seq} was already accepted")

    def commit(self, seq: int, width: int = REPLAY_WINDOW) -> bool:
        """Mark ``seq`` seen (call after ``check``). True when it is the new highest."""
        if seq > self.top:
            ahead = seq - self.top
            # A jump past the window clears it; never shift by a huge amount.
            self.bits = ((self.bits << ahead) | 1) & ((1 << width) - 1) if ahead < width else 1
            self.top = seq
            return True
        self.bits |= 1 << (self.top - seq)
        return False


class ReplayGuard:
    """The windows of every amphora a manager hears from.

    About 100 bytes per amphora (the window object, its two ints and the dict
    entry; the id bytes are shared with the caller's heartbeat value).
    """

    __slots__ = ("_windows", "width")

    def __init__(self, width: int = REPLAY_WINDOW) -> None:
        if width < 1:
            raise ValueError(f"replay window width must be at least 1, got {width}")
        self.width = width
        self._windows: dict[bytes, ReplayWindow] = {}

    def check(self, amphora_id: bytes, seq: int) -> None:
        window = self._windows.get(amphora_id)
        if window is not None:
            window.check(seq, self.width)

    def commit(self, amphora_id: bytes, seq: int) -> bool:
        window = self._windows.get(amphora_id)
        if window is None:
            window = self._windows[amphora_id] = ReplayWindow()
        return window.commit(seq, self.width)

    def check_and_update(self, amphora_id: bytes, seq: int) -> bool:
        """Reject a replay, else record ``seq``; True when it is the amphora's newest.

        Apply statuses and counters only from a newest heartbeat: a late one
        (reordered, still inside the window) only proves the amphora was alive.
        """
        window = self._windows.get(amphora_id)
        if window is None:
            window = self._windows[amphora_id] = ReplayWindow()
        else:
            window.check(seq, self.width)
        return window.commit(seq, self.width)

    def highest(self, amphora_id: bytes) -> int | None:
        window = self._windows.get(amphora_id)
        return None if window is None or window.top < 0 else window.top

    def forget(self, amphora_id: bytes) -> None:
        """Drop an amphora's window (the amphora was deleted or failed over)."""
        self._windows.pop(amphora_id, None)

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, amphora_id: object) -> bool:
        return amphora_id in self._windows


def check_freshness(sent_at_ms: int, now_ms: int, *, max_age_ms: int, max_future_ms: int) -> None:
    """Reject a heartbeat sent more than ``max_age_ms`` ago or ``max_future_ms`` ahead.

    ``now_ms`` is the receiver's wall clock (Unix epoch ms) at arrival.
    """
    if sent_at_ms < now_ms - max_age_ms:
        raise Rejected(Reason.STALE, f"sent {now_ms - sent_at_ms} ms ago > {max_age_ms} ms")
    if sent_at_ms > now_ms + max_future_ms:
        raise Rejected(
            Reason.FUTURE, f"sent {sent_at_ms - now_ms} ms in the future > {max_future_ms} ms"
        )


def alive_at_ms(sent_at_ms: int, received_at_ms: int) -> int:
    """The time a heartbeat proves the amphora alive: ``min(sent, received)``.

    Store this as ``last_update`` (never moving it backwards): a captured
    heartbeat replayed later, to any manager, then proves nothing newer than
    its original send time, so it cannot keep a dead amphora alive.
    """
    return min(sent_at_ms, received_at_ms)


class OctaviaArrival(enum.Enum):
    """How an accepted Octavia-format heartbeat relates to the agent's sequence."""

    NEWEST = "newest"  # above the highest so far
    REORDERED = "reordered"  # below it, arriving right after it: old news
    RESTART = "restart"  # at or below it, later: the agent started a new run at 0


class _Run:
    __slots__ = ("recent", "top", "top_ms")

    def __init__(self, seq: int, now_ms: int) -> None:
        self.top = seq
        self.top_ms = now_ms
        self.recent: list[tuple[int, int]] = []  # (seq, arrival ms) accepted lately


class OctaviaSequences:
    """Per amphora: the highest seq of the agent's current run, and the seqs
    accepted in the last ``duplicate_ms``. The only clock is the arrival time
    passed in (ms); a clock that steps back is read as time gone by.

    For each heartbeat that verified, in this order:

    1. the same seq accepted less than ``duplicate_ms`` ago: a network
       duplicate, rejected as REPLAYED (v3 counters are deltas: it would count
       twice);
    2. above the highest: NEWEST;
    3. at or below it, less than ``duplicate_ms`` after the highest arrived:
       REORDERED (accepted as proof of life and counters, statuses not
       applied), the highest kept;
    4. otherwise RESTART: the agent restarted (its sequence lives in memory
       and starts at 0), accepted at once as the newest, whatever the number.

    Nothing tells a restart from a replay of a captured heartbeat older than
    ``duplicate_ms``: Octavia's format carries no send time. Such a replay is
    accepted and counted as a restart (docs/octavia-compat.md).
    """

    __slots__ = ("_runs", "duplicate_ms", "recent_max")

    def __init__(self, duplicate_ms: int, *, recent_max: int = 16) -> None:
        if duplicate_ms < 0 or recent_max < 1:
            raise ValueError("duplicate_ms must be >= 0 and recent_max >= 1")
        self.duplicate_ms = duplicate_ms
        self.recent_max = recent_max
        self._runs: dict[bytes, _Run] = {}

    def check_and_update(self, amphora_id: bytes, seq: int, now_ms: int) -> OctaviaArrival:
        run = self._runs.get(amphora_id)
        if run is None:
            run = self._runs[amphora_id] = _Run(seq, now_ms)
            run.recent.append((seq, now_ms))
            return OctaviaArrival.NEWEST
        window = self.duplicate_ms
        recent = [(s, at) for s, at in run.recent if 0 <= now_ms - at < window]
        if any(s == seq for s, _ in recent):
            run.recent = recent
            raise Rejected(Reason.REPLAYED, f"seq {seq} arrived again within {window} ms")
        if seq > run.top:
            verdict = OctaviaArrival.NEWEST
        elif 0 <= now_ms - run.top_ms < window:
            verdict = OctaviaArrival.REORDERED
        else:
            verdict = OctaviaArrival.RESTART
        if verdict is not OctaviaArrival.REORDERED:
            run.top, run.top_ms = seq, now_ms
        recent.append((seq, now_ms))
        run.recent = recent[-self.recent_max :]
        return verdict

    def highest(self, amphora_id: bytes) -> int | None:
        run = self._runs.get(amphora_id)
        return None if run is None else run.top

    def forget(self, amphora_id: bytes) -> None:
        self._runs.pop(amphora_id, None)

    def __len__(self) -> int:
        return len(self._runs)

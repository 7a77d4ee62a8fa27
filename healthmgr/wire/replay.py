"""Replay protection: a per-amphora sliding window over seq, and a freshness bound.

Pure state, no clock and no I/O: the receiver passes its own time in. Order in
the manager, after ``decode_native`` verified the tag (a forged datagram must
never move a window): ``check_freshness`` then ``ReplayGuard.check_and_update``.
Rules and their reasons: schema/heartbeat.md, "Replay and freshness".
"""

from __future__ import annotations

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

"""When the agent polls HAProxy and when it sends a heartbeat. Pure: the caller passes the time.

The agent reads HAProxy every ``poll_interval`` and sends a heartbeat

* at once when what the heartbeat would report differs from what the last one
  sent reported (a member, pool or listener status, a listener appearing or
  disappearing, HAProxy going away), but at most one per ``coalesce_window``:
  a change seen sooner after the last heartbeat is held until the window ends,
  and whatever changed meanwhile goes out in that one heartbeat;
* otherwise once ``heartbeat_interval`` has passed since the last heartbeat.

So the steady rate is one heartbeat per ``heartbeat_interval``, and bad news
leaves at the first poll that sees it. Any heartbeat restarts the interval:
consecutive heartbeats are never more than ``heartbeat_interval`` apart.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, replace


class Why(enum.Enum):
    """Why a heartbeat goes out."""

    FIRST = "first"  # nothing sent yet (start, or heartbeats resume after a pause)
    CHANGED = "changed"
    DUE = "due"


@dataclass(frozen=True, slots=True)
class Timing:
    heartbeat_interval: float
    poll_interval: float = 1.0
    coalesce_window: float = 0.2

    def __post_init__(self) -> None:
        if not (self.heartbeat_interval > 0 and self.poll_interval > 0):
            raise ValueError("heartbeat_interval and poll_interval must be positive")
        if self.coalesce_window < 0:
            raise ValueError("coalesce_window must not be negative")

    @property
    def poll_every(self) -> float:
        """Polling slower than sending would only delay the periodic heartbeat."""
        return min(self.poll_interval, self.heartbeat_interval)


@dataclass(frozen=True, slots=True)
class Cadence:
    """The schedule's state: what went out when, and when the agent last polled.

    Times are seconds of a monotonic clock. ``sent_at`` and ``reported`` record
    every heartbeat *attempted* (one lost to a send error is not retried
    before its time, as with a lost datagram).
    """

    timing: Timing
    sent_at: float | None = None
    reported: Hashable | None = None
    polled_at: float | None = None
    held_until: float | None = None

    def next_wake(self) -> float:
        """When to poll next: the poll period, the periodic heartbeat or a held change."""
        if self.polled_at is None:
            return float("-inf")
        wake = self.polled_at + self.timing.poll_every
        if self.sent_at is not None:
            wake = min(wake, self.sent_at + self.timing.heartbeat_interval)
        if self.held_until is not None:
            wake = min(wake, self.held_until)
        return wake

    def decide(self, now: float, summary: Hashable) -> tuple[Why | None, Cadence]:
        """After a poll at ``now`` that would report ``summary``: send (and why) or not."""
        polled = replace(self, polled_at=now, held_until=None)
        if self.sent_at is None:
            return Why.FIRST, polled
        if summary != self.reported:
            window_ends = self.sent_at + self.timing.coalesce_window
            if now >= window_ends:
                return Why.CHANGED, polled
            return None, replace(polled, held_until=window_ends)
        if now >= self.sent_at + self.timing.heartbeat_interval:
            return Why.DUE, polled
        return None, polled

    def sent(self, now: float, summary: Hashable) -> Cadence:
        return replace(self, sent_at=now, reported=summary, held_until=None)

    def paused(self, now: float) -> Cadence:
        """Nothing may be sent now (keepalived is down): when allowed again, send at once."""
        return Cadence(self.timing, polled_at=now)

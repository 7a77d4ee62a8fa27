"""Whether this manager can see: its local health, as a pure state machine.

Lifeguard's local health awareness, for a health manager: a manager whose
database writes fail or stall, whose socket drops datagrams, or whose event
loop lags would judge amphorae on evidence it could not gather, so it does
not judge at all while impaired, nor for a grace period after (the detector
asks ``healthy_for``). Fed with samples by the daemon's monitor task; times
are trio's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DB_WRITE_FAILED = "db_write_failed"  # the last flush or liveness write failed
DB_STALLED = "db_stalled"  # a database operation has been running too long
DB_UNREACHABLE = "db_unreachable"  # the health check could not read the database
KERNEL_DROPS = "kernel_drops"  # the kernel dropped datagrams at our socket
LOOP_LAG = "loop_lag"  # the event loop woke up late
REASONS = (DB_WRITE_FAILED, DB_STALLED, DB_UNREACHABLE, KERNEL_DROPS, LOOP_LAG)


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the manager's senses, taken by the monitor task."""

    now: float
    db_failing: bool = False  # the last flush / liveness write failed
    db_busy_for: float = 0.0  # age of the oldest database operation in flight
    db_unreadable: bool = False  # the last health-check read failed
    kernel_drops: int = 0  # cumulative drops at the socket
    loop_lag: float = 0.0  # how late the monitor's last sleep ended


@dataclass(frozen=True, slots=True)
class Change:
    """A transition, for the log line and the metrics."""

    impaired: bool
    reasons: tuple[str, ...]
    started: tuple[str, ...]  # reasons that began with this sample


@dataclass
class Impairment:
    db_stall_after: float  # a database operation older than this is a stall
    lag_after: float  # an event loop later than this is lagging
    hold: float = 2.0  # bursty signals (drops, lag) count for this long after they stop
    started_at: float = 0.0
    _drops: int | None = None
    _last_seen: dict[str, float] = field(default_factory=dict)
    reasons: frozenset[str] = frozenset()
    healthy_since: float | None = None

    def __post_init__(self) -> None:
        self.healthy_since = self.started_at  # a start is a recovery: the grace applies

    @property
    def impaired(self) -> bool:
        return bool(self.reasons)

    def healthy_for(self, now: float) -> float | None:
        return None if self.healthy_since is None else now - self.healthy_since

    def reason(self) -> str | None:
        return ",".join(sorted(self.reasons)) or None

    def update(self, s: Sample) -> Change | None:
        """Fold one sample in; return the transition if the set of reasons changed."""
        now_active = self._active(s)
        if now_active == self.reasons:
            return None
        started = tuple(sorted(now_active - self.reasons))
        was = self.impaired
        self.reasons = now_active
        if was and not now_active:
            self.healthy_since = s.now
        elif now_active:
            self.healthy_since = None
        return Change(bool(now_active), tuple(sorted(now_active)), started)

    def _active(self, s: Sample) -> frozenset[str]:
        seen = self._last_seen
        if s.db_failing:
            seen[DB_WRITE_FAILED] = s.now
        if s.db_busy_for > self.db_stall_after:
            seen[DB_STALLED] = s.now
        if s.db_unreadable:
            seen[DB_UNREACHABLE] = s.now
        if self._drops is not None and s.kernel_drops > self._drops:
            seen[KERNEL_DROPS] = s.now
        self._drops = s.kernel_drops
        if s.loop_lag > self.lag_after:
            seen[LOOP_LAG] = s.now
        active = set()
        for reason, at in seen.items():
            # Database trouble lasts until a sample says otherwise; bursts are held.
            bursty = reason in (KERNEL_DROPS, LOOP_LAG)
            if (bursty and s.now - at < self.hold) or (not bursty and at == s.now):
                active.add(reason)
        return frozenset(active)

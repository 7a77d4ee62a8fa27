"""Failure detection as a pure function of plain values and a clock.

Which silent amphorae may be failed over now, which are held and why, what the
circuit breaker says. No I/O and no clock of its own: the health checker feeds
it a :class:`Snapshot` read from the database, this manager's own health, and
the time (trio's clock, so the rules run under ``MockClock`` in tests).

The rules (docs/operations.md, "Judgment"):

1. A manager that cannot see does not judge: while it is impaired, and for
   ``heartbeat_timeout`` after it recovers (or starts), no verdict at all.
2. Evidence, not absence: a stale amphora whose last observer (the manager
   that processed its newest heartbeat) is not live, is impaired, or has not
   been healthy for a full ``heartbeat_timeout`` is deferred, and its silence
   does not count toward the breaker. The deferral is bounded: an amphora
   silent for ``observer_timeout`` is judged on its silence alone, its
   observer presumed dead (the reason says so, an alert).
3. Mass failure is one event: an amphora silent for ``suspect_after`` (half
   the timeout, more while managers are lost) counts toward the breaker, and
   a stale one is held ``settle`` seconds more before it may be failed over,
   so an outage whose onset spreads over most of a ``heartbeat_timeout`` is
   seen whole. At ``threshold`` silent amphorae the
   breaker opens: stale ones become FAILOVER_STOPPED, none is failed over. It
   closes when fewer are silent and no stopped amphora has come back for a
   full ``heartbeat_timeout`` (not in the middle of a recovery).
4. Failovers are rate-limited across managers: at most ``rate_limit`` started
   per ``heartbeat_timeout`` (counted in the database).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Failover reasons: why an amphora is failed over.
HEARTBEAT_TIMEOUT = "heartbeat_timeout"
LISTENER_COUNT = "listener_count_mismatch"
OBSERVER_PRESUMED_DEAD = "observer_presumed_dead"
# Deferral and stop reasons.
SETTLING = "settling"
OBSERVER_UNREACHABLE = "observer_unreachable"
OBSERVER_IMPAIRED = "observer_impaired"
OBSERVER_RECOVERING = "observer_recovering"
RATE_LIMITED = "rate_limited"
BREAKER_OPEN = "breaker_open"


class Action(enum.Enum):
    FAILOVER = "failover"
    DEFER = "defer"
    STOP = "stop"  # FAILOVER_STOPPED by the breaker


@dataclass(frozen=True, slots=True)
class Silent:
    """An amphora that missed heartbeats (a failover candidate once stale)."""

    amphora_id: str
    load_balancer_id: str | None
    silent_for: float  # seconds since its last_update
    stopped: bool = False  # FAILOVER_STOPPED already
    observer: str | None = None  # manager that processed its newest heartbeat
    beating_unhealthy: bool = False  # its newest heartbeat failed the listener count


@dataclass(frozen=True, slots=True)
class Observer:
    """Another manager (or this one) as its row in the database shows it."""

    manager_id: str
    age: float  # seconds since it last wrote its liveness (database clock)
    impaired: bool = False
    healthy_for: float | None = None  # None while impaired
    stopped: bool = False  # shut down cleanly


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one health check read from the database."""

    silent: Sequence[Silent]  # silent amphorae, oldest first (possibly capped)
    silent_count: int  # all silent amphorae (>= len(silent))
    fleet: int  # monitored amphorae (for a threshold given as a share)
    stopped_count: int  # amphorae in FAILOVER_STOPPED
    recent_failovers: int  # failovers requested in the last heartbeat_timeout, all managers
    observers: Mapping[str, Observer] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SelfHealth:
    impaired: bool
    reason: str | None
    healthy_for: float | None  # seconds since it last became healthy (or started)


@dataclass(frozen=True, slots=True)
class Verdict:
    amphora_id: str
    load_balancer_id: str | None
    action: Action
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    judging: bool  # False: impaired or in grace; nothing else below is set
    not_judging_because: str | None = None
    failover: tuple[Verdict, ...] = ()
    stop: tuple[Verdict, ...] = ()
    deferred: tuple[Verdict, ...] = ()
    breaker_open: bool = False
    breaker_changed: bool = False
    breaker_reason: str = ""
    threshold: int | None = None
    stale: int = 0


@dataclass(frozen=True, slots=True)
class Threshold:
    """``failover_threshold``: a count, or a share of the fleet with a floor."""

    count: int | None = None
    percent: float | None = None
    minimum: int = 3

    def resolve(self, fleet: int) -> int | None:
        if self.count is not None:
            return self.count
        if self.percent is None:
            return None
        return max(self.minimum, math.ceil(fleet * self.percent / 100))

    @classmethod
    def parse(cls, value: int | str | None, minimum: int = 3) -> Threshold:
        """``20`` (a count), ``"10%"`` (a share of the fleet), or None (no breaker)."""
        if value is None:
            return cls()
        if isinstance(value, int):
            return cls(count=value)
        text = str(value).strip()
        if text.endswith("%"):
            return cls(percent=float(text[:-1]), minimum=minimum)
        return cls(count=int(text))


@dataclass
class DetectorConfig:
    heartbeat_timeout: float
    heartbeat_interval: float
    threshold: Threshold = field(default_factory=lambda: Threshold(percent=10.0))
    settle: float | None = None  # default: 2 * heartbeat_interval
    rate_limit: int | None = None  # per heartbeat_timeout; default: half the threshold
    observer_fresh: float = 3.0  # an observer whose row is older is not live
    observer_timeout: float = 300.0  # ... and older than this is presumed dead

    @property
    def listed_after(self) -> float:
        """The shortest silence the check reads (the least ``suspect_after`` can be)."""
        return min(self.heartbeat_timeout, 2 * self.heartbeat_interval)

    def suspect_after(self, lost_managers: int = 0) -> float:
        """Silence that counts toward the breaker, at most the timeout.

        Half the timeout, and at least two heartbeat intervals more than a
        lost manager explains: an agent sending round robin to N managers,
        k of them gone, is heard only every k + 1 intervals while alive.
        """
        extra = (2 + lost_managers) * self.heartbeat_interval
        return min(
            self.heartbeat_timeout, max(self.listed_after, self.heartbeat_timeout / 2, extra)
        )

    @property
    def settle_window(self) -> float:
        return 2 * self.heartbeat_interval if self.settle is None else self.settle

    def rate(self, threshold: int | None) -> int | None:
        if self.rate_limit is not None:
            return self.rate_limit
        return None if threshold is None else max(1, threshold // 2)


class Detector:
    """The judgment of one manager; holds only the breaker's memory."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.breaker_open = False
        self.breaker_reason = ""
        self._activity = -math.inf  # last time the breaker saw the outage or a recovery
        self._stopped_count: int | None = None

    def decide(self, snap: Snapshot, me: SelfHealth, now: float) -> Decision:
        cfg = self.config
        if me.impaired:
            return Decision(
                judging=False,
                not_judging_because=f"impaired: {me.reason}",
                breaker_open=self.breaker_open,
            )
        if me.healthy_for is None or me.healthy_for < cfg.heartbeat_timeout:
            return Decision(
                judging=False, not_judging_because="grace", breaker_open=self.breaker_open
            )
        # Silence is evidence only where its observer could see.
        doubted: list[Verdict] = []
        trusted: list[tuple[Silent, str]] = []
        for a in snap.silent:
            held, reason = self._observer(a, snap.observers)
            if held:
                if a.silent_for >= cfg.heartbeat_timeout:
                    doubted.append(_verdict(a, Action.DEFER, reason))
            else:
                trusted.append((a, reason))
        suspect = cfg.suspect_after(_lost(snap.observers, cfg))
        too_short = sum(1 for a, _ in trusted if a.silent_for < suspect)
        silent = snap.silent_count - (len(snap.silent) - len(trusted)) - too_short
        threshold = cfg.threshold.resolve(snap.fleet)
        changed = self._breaker(silent, suspect, snap, threshold, now)
        stale = [(a, r) for a, r in trusted if a.silent_for >= cfg.heartbeat_timeout]
        base = Decision(
            judging=True,
            breaker_open=self.breaker_open,
            breaker_changed=changed,
            breaker_reason=self.breaker_reason,
            threshold=threshold,
            stale=len(stale) + len(doubted),
        )
        if self.breaker_open:
            stop = tuple(_verdict(a, Action.STOP, BREAKER_OPEN) for a, _ in stale if not a.stopped)
            held = tuple(_verdict(a, Action.DEFER, BREAKER_OPEN) for a, _ in stale if a.stopped)
            return _replace(base, stop=stop, deferred=held + tuple(doubted))
        return self._judge(stale, doubted, snap, threshold, base)

    def _breaker(
        self, silent: int, suspect: float, snap: Snapshot, threshold: int | None, now: float
    ) -> bool:
        """Open at ``threshold`` silent amphorae; close only after a quiet timeout."""
        recovering = self._stopped_count is not None and snap.stopped_count < self._stopped_count
        self._stopped_count = snap.stopped_count
        over = threshold is not None and silent >= threshold
        if over or recovering:
            self._activity = now
        if over and not self.breaker_open:
            self.breaker_open = True
            self.breaker_reason = (
                f"{silent} of {snap.fleet} amphorae silent for "
                f"{suspect:g} s or more (failover_threshold {threshold})"
            )
            return True
        quiet = now - self._activity >= self.config.heartbeat_timeout
        if self.breaker_open and not over and quiet:
            self.breaker_open = False
            self.breaker_reason = (
                f"fewer than {threshold} amphorae silent and none came back "
                f"for {self.config.heartbeat_timeout:g} s"
            )
            return True
        if self.breaker_open and recovering:
            self.breaker_reason = "amphorae are coming back; holding until the recovery settles"
        return False

    def _judge(
        self,
        stale: list[tuple[Silent, str]],
        doubted: list[Verdict],
        snap: Snapshot,
        threshold: int | None,
        base: Decision,
    ) -> Decision:
        cfg = self.config
        budget = cfg.rate(threshold)
        left = None if budget is None else max(0, budget - snap.recent_failovers)
        failover: list[Verdict] = []
        deferred: list[Verdict] = list(doubted)
        for a, reason in stale:  # oldest first
            if a.silent_for < cfg.heartbeat_timeout + cfg.settle_window:
                deferred.append(_verdict(a, Action.DEFER, SETTLING))
            elif left is not None and left <= 0:
                deferred.append(_verdict(a, Action.DEFER, RATE_LIMITED))
            else:
                left = None if left is None else left - 1
                failover.append(_verdict(a, Action.FAILOVER, reason))
        return _replace(base, failover=tuple(failover), deferred=tuple(deferred))

    def _observer(self, a: Silent, observers: Mapping[str, Observer]) -> tuple[bool, str]:
        """(hold it, the reason): may this amphora's silence be believed?

        Held at most until the amphora has been silent ``observer_timeout``:
        then its observer is presumed dead (or hopeless) and it is judged.
        """
        reason = LISTENER_COUNT if a.beating_unhealthy else HEARTBEAT_TIMEOUT
        if a.observer is None:
            return False, reason  # never observed: its silence is all there is
        obs = observers.get(a.observer)
        cfg = self.config
        if obs is None or a.silent_for >= cfg.observer_timeout:
            trusted = obs is not None and _trusted(obs, cfg)
            return False, reason if trusted else OBSERVER_PRESUMED_DEAD
        if obs.stopped or obs.age > cfg.observer_fresh:
            return True, OBSERVER_UNREACHABLE
        if obs.impaired:
            return True, OBSERVER_IMPAIRED
        if obs.healthy_for is None or obs.healthy_for < cfg.heartbeat_timeout:
            return True, OBSERVER_RECOVERING
        return False, reason


LOST_MANAGER_MEMORY = 86_400.0  # a manager row older than a day is a decommissioned one


def _lost(observers: Mapping[str, Observer], cfg: DetectorConfig) -> int:
    """Managers not live (dead, cut off or stopped): agents that still list them
    lose the heartbeats they send there, however long ago they went (only rows
    untouched for a day, a decommissioned manager's, are left out)."""
    return sum(
        1
        for o in observers.values()
        if (o.stopped or o.age > cfg.observer_fresh) and o.age < LOST_MANAGER_MEMORY
    )


def _trusted(obs: Observer, cfg: DetectorConfig) -> bool:
    healthy = obs.healthy_for is not None and obs.healthy_for >= cfg.heartbeat_timeout
    return not obs.stopped and obs.age <= cfg.observer_fresh and not obs.impaired and healthy


def _verdict(a: Silent, action: Action, reason: str) -> Verdict:
    return Verdict(a.amphora_id, a.load_balancer_id, action, reason)


def _replace(base: Decision, **changes: object) -> Decision:
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

"""The in-memory view: topology cache and the application of heartbeats.

No I/O here. Heartbeats of amphorae the cache does not hold wait (bounded)
while the refresher loads their topology in one batch; the view says which
amphorae it wants loaded and installs what the store returns.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from healthmgr import status
from healthmgr.manager.pending import Pending
from healthmgr.topology import AmphoraTopology, LoadBalancerTopology
from healthmgr.wire.values import Heartbeat, Id

WAITING_PER_AMPHORA = 4  # heartbeats held per amphora while its topology loads


class Applied(enum.Enum):
    ACCEPTED = "accepted"
    QUEUED = "queued"  # waiting for its topology
    UNKNOWN_AMPHORA = "unknown_amphora"
    LATE = "late"  # applied, but too late to refresh amphora_health
    UNHEALTHY = "unhealthy"  # applied; listener count differs: no health refresh


@dataclass(slots=True)
class _Amphora:
    lb_id: Id | None
    known: bool
    fetched_at: float  # monotonic seconds
    # The last evaluation: skipped when neither the reported statuses nor the
    # cached load balancer changed since (the steady state of a healthy fleet).
    last_lb: LoadBalancerTopology | None = None
    last_report: int = 0
    last_healthy: bool = False


def _report_hash(hb: Heartbeat) -> int:
    """Hash of what the status rules read from a heartbeat (not its counters)."""
    return hash((tuple([(r.id, r.status) for r in hb.listeners]), hb.pools))


class Arrival(NamedTuple):
    """A verified heartbeat and when it arrived (a tuple: one per datagram)."""

    heartbeat: Heartbeat
    mono: float  # monotonic seconds at arrival
    wall_ms: int  # wall clock at arrival
    newest: bool = True  # the amphora's highest sequence so far


class View:
    def __init__(self, *, ttl: float, refresh_min_interval: float, late_after: float) -> None:
        self.ttl = ttl
        self.refresh_min_interval = refresh_min_interval
        self.late_after = late_after
        self.pending = Pending()
        self._amps: dict[Id, _Amphora] = {}
        self._lbs: dict[Id, LoadBalancerTopology] = {}
        self._waiting: dict[Id, list[Arrival]] = {}
        self._wanted: set[Id] = set()
        self._refreshed_at: dict[Id, float] = {}  # lb id -> last forced refresh

    # -- what the refresher needs -------------------------------------------
    def wanted(self, limit: int) -> list[Id]:
        """Amphorae to load next (removed from the wanted set)."""
        out: list[Id] = []
        while self._wanted and len(out) < limit:
            out.append(self._wanted.pop())
        return out

    def want_again(self, ids: Iterable[Id]) -> None:
        """Re-queue ids whose load failed (only those still unknown or waiting)."""
        for amp_id in ids:
            if amp_id in self._waiting or amp_id not in self._amps:
                self._wanted.add(amp_id)

    def has_wanted(self) -> bool:
        return bool(self._wanted)

    def expired(self, now: float, limit: int) -> list[Id]:
        """Known amphorae whose entry is older than the TTL."""
        cutoff = now - self.ttl
        out: list[Id] = []
        # Entries are kept in fetch order (install re-inserts), oldest first.
        for amp_id, entry in self._amps.items():
            if entry.fetched_at >= cutoff or len(out) >= limit:
                break
            out.append(amp_id)
        return out

    def install(
        self, requested: Iterable[Id], found: Mapping[Id, AmphoraTopology], now: float
    ) -> list[Arrival]:
        """Store loaded topologies; return the heartbeats that waited for them."""
        released: list[Arrival] = []
        for amp_id in requested:
            topo = found.get(amp_id)
            lb = topo.load_balancer if topo else None
            self._amps.pop(amp_id, None)
            self._amps[amp_id] = _Amphora(lb.id if lb else None, topo is not None, now)
            if lb is not None:
                self._lbs[lb.id] = lb
            released.extend(self._waiting.pop(amp_id, ()))
        return released

    def forget(self, amphora_id: Id) -> None:
        self._amps.pop(amphora_id, None)

    def tracked(self) -> int:
        return len(self._amps)

    def load_balancer(self, lb_id: Id) -> LoadBalancerTopology | None:
        return self._lbs.get(lb_id)

    # -- applying heartbeats ------------------------------------------------
    def apply(self, arrival: Arrival, now: float) -> Applied:
        hb = arrival.heartbeat
        entry = self._amps.get(hb.amphora_id)
        if entry is None:
            return self._wait(arrival)
        if not entry.known:
            return Applied.UNKNOWN_AMPHORA
        self.pending.stats(hb)
        if entry.lb_id is None:
            healthy = not hb.listeners  # R27: a spare amphora serves nothing
        elif arrival.newest:
            healthy = self._apply_status(entry, hb, now)
        else:
            healthy = status.is_healthy(self._lbs[entry.lb_id], hb)  # late: no status writes
        if not healthy:
            return Applied.UNHEALTHY
        if now - arrival.mono > self.late_after:
            return Applied.LATE
        # A replayed or delayed heartbeat proves life only up to its send time.
        self.pending.bump(hb.amphora_id, min(arrival.wall_ms, hb.sent_at_ms))
        self.pending.arrivals.append(arrival.mono)
        return Applied.ACCEPTED

    def _apply_status(self, entry: _Amphora, hb: Heartbeat, now: float) -> bool:
        lb_id = entry.lb_id
        assert lb_id is not None
        lb = self._lbs[lb_id]
        report = _report_hash(hb)
        if lb is entry.last_lb and report == entry.last_report:
            return entry.last_healthy  # same report, same topology: same (empty) outcome
        outcome = status.evaluate(lb, hb)
        writes = outcome.writes()
        if writes:
            lb = self._lbs[lb_id] = status.apply(lb, outcome)
            for write in writes:
                self.pending.status(write)
        if outcome.names_unknown_objects or not outcome.healthy:
            # The cache may be behind the API (a new member, PENDING_UPDATE,
            # a disabled listener): re-read before trusting this verdict again.
            self._want_refresh(hb.amphora_id, lb_id, now)
            lb = None
        entry.last_lb, entry.last_report, entry.last_healthy = lb, report, outcome.healthy
        return outcome.healthy

    def _want_refresh(self, amphora_id: Id, lb_id: Id, now: float) -> None:
        if now - self._refreshed_at.get(lb_id, -1e18) < self.refresh_min_interval:
            return
        self._refreshed_at[lb_id] = now
        self._wanted.add(amphora_id)

    def _wait(self, arrival: Arrival) -> Applied:
        amp_id = arrival.heartbeat.amphora_id
        queue = self._waiting.setdefault(amp_id, [])
        if len(queue) >= WAITING_PER_AMPHORA:
            queue.pop(0)
        queue.append(arrival)
        self._wanted.add(amp_id)
        return Applied.QUEUED

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
# Full topologies are needed only when a report changes, so only the most
# recently used are kept; every amphora keeps hashes (see _Amphora).
MAX_CACHED_LBS = 20_000


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
    # load balancer (by its hash) changed since: the steady state of a fleet.
    last_report: int = 0
    lb_hash: int = 0
    last_healthy: bool = False
    bumped_ms: int = -(2**62)  # last_update last handed to the writer


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
    def __init__(
        self,
        *,
        ttl: float,
        refresh_min_interval: float,
        late_after: float,
        health_resolution: float = 0.0,
        stats_every: int = 1,
    ) -> None:
        self.ttl = ttl
        self.health_resolution_ms = int(health_resolution * 1000)
        self.stats_every = stats_every
        self.refresh_min_interval = refresh_min_interval
        self.late_after = late_after
        self.pending = Pending()
        self._amps: dict[Id, _Amphora] = {}
        self._lbs: dict[Id, LoadBalancerTopology] = {}  # LRU, MAX_CACHED_LBS at most
        self._lb_hash: dict[Id, int] = {}  # every tracked load balancer
        self.max_cached_lbs = MAX_CACHED_LBS
        self._waiting: dict[Id, list[Arrival]] = {}
        self._wanted: set[Id] = set()
        self._refreshed_at: dict[Id, float] = {}  # lb id -> last forced refresh
        self.superseded = 0  # waiting heartbeats dropped for newer ones

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
            old = self._amps.pop(amp_id, None)
            entry = _Amphora(lb.id if lb else None, topo is not None, now)
            if old is not None and old.lb_id == entry.lb_id:
                # Keep the last verdict: it still holds if the hash did not move.
                entry.last_report, entry.lb_hash = old.last_report, old.lb_hash
                entry.last_healthy, entry.bumped_ms = old.last_healthy, old.bumped_ms
            self._amps[amp_id] = entry  # re-inserted: the dict stays in fetch order
            if lb is not None:
                self._cache_lb(lb)
            released.extend(self._waiting.pop(amp_id, ()))
        return released

    def _cache_lb(self, lb: LoadBalancerTopology, lb_hash: int | None = None) -> int:
        self._lbs.pop(lb.id, None)
        self._lbs[lb.id] = lb
        if len(self._lbs) > self.max_cached_lbs:
            del self._lbs[next(iter(self._lbs))]
        h = self._lb_hash[lb.id] = hash(lb) if lb_hash is None else lb_hash
        return h

    def tracked(self) -> int:
        return len(self._amps)

    # -- applying heartbeats ------------------------------------------------
    def apply(self, arrival: Arrival, now: float) -> Applied:
        hb = arrival.heartbeat
        entry = self._amps.get(hb.amphora_id)
        if entry is None:
            return self._wait(arrival)
        if not entry.known:
            return Applied.UNKNOWN_AMPHORA
        if entry.lb_id is None:
            healthy = not hb.listeners  # R27: a spare amphora serves nothing
        elif not arrival.newest:
            healthy = entry.last_healthy  # a late heartbeat writes no statuses
        else:
            verdict = self._apply_status(entry, hb, now)
            if verdict is None:  # its load balancer left the cache: load it first
                return self._wait(arrival)
            healthy = verdict
        if hb.counters_are_deltas or hb.seq % self.stats_every == 0:
            # Absolute counters: skipping a heartbeat loses nothing, the next carries it.
            self.pending.stats(hb)
        if not healthy:
            return Applied.UNHEALTHY
        if now - arrival.mono > self.late_after:
            return Applied.LATE
        # A replayed or delayed heartbeat proves life only up to its send time.
        alive_ms = min(arrival.wall_ms, hb.sent_at_ms)
        if alive_ms - entry.bumped_ms >= self.health_resolution_ms:
            entry.bumped_ms = alive_ms
            self.pending.bump(hb.amphora_id, alive_ms)
            self.pending.arrivals.append(arrival.mono)
        return Applied.ACCEPTED

    def _apply_status(self, entry: _Amphora, hb: Heartbeat, now: float) -> bool | None:
        """The listener-count verdict, writing status changes; None: topology needed."""
        lb_id = entry.lb_id
        assert lb_id is not None
        report = _report_hash(hb)
        if report == entry.last_report and self._lb_hash.get(lb_id) == entry.lb_hash:
            return entry.last_healthy  # same report, same topology: same (empty) outcome
        lb = self._lbs.get(lb_id)
        if lb is None:
            return None
        outcome = status.evaluate(lb, hb)
        writes = outcome.writes()
        if writes:
            lb = status.apply(lb, outcome)
            for write in writes:
                self.pending.status(write)
        entry.lb_hash = self._cache_lb(lb, None if writes else self._lb_hash.get(lb_id))
        entry.last_report, entry.last_healthy = report, outcome.healthy
        if outcome.names_unknown_objects or not outcome.healthy:
            # The cache may be behind the API (a new member, PENDING_UPDATE,
            # a disabled listener): re-read, and evaluate again meanwhile.
            self._want_refresh(hb.amphora_id, lb_id, now)
            entry.last_report = 0
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
            self.superseded += 1  # the newer ones carry its counters and liveness
        queue.append(arrival)
        self._wanted.add(amp_id)
        return Applied.QUEUED

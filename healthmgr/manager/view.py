"""The in-memory view: topology cache and the application of heartbeats.

No I/O here. Heartbeats of amphorae the cache does not hold wait (bounded)
while the refresher loads their topology in one batch; the view says which
amphorae it wants loaded and installs what the store returns.

Each applied heartbeat goes through the one implementation of the rules
(``status.evaluate_amphora``, ``replay.alive_at_ms``); the view only caches
their last outcome per amphora, so the steady state of a fleet (same report,
same topology) costs a hash compare.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from healthmgr.manager.pending import Pending, Report
from healthmgr.rules import constants as c
from healthmgr.rules import status
from healthmgr.rules.batch import PackedStatuses, pack_statuses
from healthmgr.rules.topology import AmphoraTopology, LoadBalancerTopology
from healthmgr.wire.ids import Id
from healthmgr.wire.replay import alive_at_ms
from healthmgr.wire.values import Heartbeat, WireFormat

WAITING_PER_AMPHORA = 4  # heartbeats held per amphora while its topology loads
# Full topologies are needed only when a report changes, so only the most
# recently used are kept; every amphora keeps hashes (see _Amphora).
MAX_CACHED_LBS = 20_000
MAX_EVENTS = 10_000  # verdict events held between two drains (the rest are counted)


class Applied(enum.Enum):
    ACCEPTED = "accepted"
    QUEUED = "queued"  # waiting for its topology
    UNKNOWN_AMPHORA = "unknown_amphora"
    LATE = "late"  # processed too late: no status and no health refresh (as Octavia)
    UNHEALTHY = "unhealthy"  # applied; listener count differs: no health refresh


class Event(NamedTuple):
    """Something the daemon logs (rate-limited) and counts: a verdict with its reason."""

    kind: str  # "listener_count_mismatch", "deleted_load_balancer", "late"
    amphora_id: Id
    lb_id: Id | None
    detail: dict[str, object]


@dataclass(slots=True)
class _Amphora:
    lb_id: Id | None
    known: bool
    fetched_at: float  # monotonic seconds
    status: str = ""
    role: str | None = None
    # The last evaluation: reused while neither the reported statuses nor the
    # load balancer (by its hash) changed: the steady state of a fleet.
    last_report: int = 0
    lb_hash: int = 0
    # The verdict itself, in the record (a tuple of its own cost 64 bytes an
    # amphora): statuses packed, 18 bytes each (rules/batch.py); None: none yet.
    determined: PackedStatuses | None = None
    digest: int = 0
    healthy: bool = False
    bumped_ms: int = -(2**62)  # last_update last handed to the writer
    stats_ms: int = -(2**62)  # arrival of the last heartbeat whose counters were kept


def _report_hash(hb: Heartbeat) -> int:
    """Hash of what the status rules read from a heartbeat (not its counters)."""
    return hash((tuple([(r.id, r.status) for r in hb.listeners]), hb.pools))


class Arrival(NamedTuple):
    """A verified heartbeat and when it arrived (a tuple: one per datagram)."""

    heartbeat: Heartbeat
    mono: float  # monotonic seconds at arrival
    wall_ms: int  # wall clock at arrival
    newest: bool = True  # the amphora's highest sequence so far
    source: object = None  # the sender's address, for log lines

    @property
    def order(self) -> int:
        """Recency across managers: the native sequence number, or the arrival
        time of an Octavia heartbeat (its agent restarts its sequence at 0)."""
        hb = self.heartbeat
        return hb.seq if hb.format is WireFormat.NATIVE else self.wall_ms


class _Waiting(NamedTuple):
    """An arrival waiting for its topology, as it came: Octavia's heartbeats
    (not held to the native format's bounds, which unpacking checks) and any
    arrival whose source is not an address."""

    heartbeat: Heartbeat
    mono: float
    wall_ms: int
    newest: bool
    source: object


# A native arrival waits as one bytes object (msgpack of the heartbeat, the
# times, newest and the source address), about 200 bytes for a seed
# heartbeat instead of a dozen objects of about 1,000 bytes (the decoded
# heartbeat, the address, the tuple and its numbers): at a fleet's first
# contact every amphora has one waiting, and that burst sets the daemon's
# resident memory for its life.
_Held = bytes | _Waiting
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(tuple[Heartbeat, float, int, bool, Any]).decode


def _hold(arrival: Arrival) -> _Held:
    hb, source = arrival.heartbeat, arrival.source
    if hb.format is WireFormat.NATIVE and (source is None or source.__class__ is tuple):
        try:
            return _pack((hb, arrival.mono, arrival.wall_ms, arrival.newest, source))
        except TypeError:  # an address of something msgpack does not hold
            pass
    return _Waiting(hb, arrival.mono, arrival.wall_ms, arrival.newest, source)


def _release(held: _Held) -> Arrival:
    if isinstance(held, _Waiting):
        return Arrival(*held)
    hb, mono, wall_ms, newest, source = _unpack(held)
    return Arrival(hb, mono, wall_ms, newest, None if source is None else tuple(source))


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
        # One held arrival, or a list of them (WAITING_PER_AMPHORA at most).
        self._waiting: dict[Id, _Held | list[_Held]] = {}
        self._wanted: set[Id] = set()
        self._refreshed_at: dict[Id, float] = {}  # lb id -> last forced refresh
        self.superseded = 0  # waiting heartbeats dropped for newer ones
        self.events: list[Event] = []
        self.events_dropped = 0

    # -- what the refresher needs -------------------------------------------
    def wanted(self, limit: int) -> list[Id]:
        """Amphorae to load next (removed from the wanted set)."""
        out: list[Id] = []
        while self._wanted and len(out) < limit:
            out.append(self._wanted.pop())
        if not self._wanted:
            # An emptied set or dict keeps its peak's table: after the first
            # contact of 100,000 amphorae, about 40 bytes each here.
            self._wanted = set()
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
            if topo is not None:
                entry.status, entry.role = topo.status, topo.role
            if old is not None and old.lb_id == entry.lb_id and old.status == entry.status:
                # Keep the last verdict: it still holds if the hash did not move.
                entry.last_report, entry.lb_hash = old.last_report, old.lb_hash
                entry.determined, entry.digest, entry.healthy = (
                    old.determined,
                    old.digest,
                    old.healthy,
                )
                entry.bumped_ms = old.bumped_ms
            if old is not None:
                entry.stats_ms = old.stats_ms
            self._amps[amp_id] = entry  # re-inserted: the dict stays in fetch order
            if lb is not None:
                self._cache_lb(lb)
            held = self._waiting.pop(amp_id, None)
            if isinstance(held, list):
                released.extend(map(_release, held))
            elif held is not None:
                released.append(_release(held))
        if not self._waiting:
            self._waiting = {}  # its peak's table: about 50 bytes an amphora (see wanted)
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
        self._keep_stats(entry, hb, arrival.wall_ms)
        delay = now - arrival.mono
        if delay >= self.late_after:
            # Octavia ignores such a heartbeat (no status, no health): whatever it
            # says is older than what the next one will say. Its counters are kept.
            self._event("late", hb.amphora_id, entry.lb_id, delay=round(delay, 3))
            return Applied.LATE
        # A replayed or delayed heartbeat proves life only up to its send time.
        alive_ms = alive_at_ms(hb.sent_at_ms, arrival.wall_ms)
        if arrival.newest:
            changed = self._verdict(entry, hb, now)
            if changed is None:  # its load balancer left the cache: load it first
                return self._wait(arrival)
            native = hb.format is WireFormat.NATIVE
            report = Report(
                arrival.order,
                entry.digest,
                entry.determined,
                alive_ms,
                entry.healthy,
                native,
                changed,
            )
            self.pending.report(hb.amphora_id, report)
        healthy = entry.healthy  # a reordered older one: the last verdict's (False: none)
        if not healthy:
            return Applied.UNHEALTHY
        if alive_ms - entry.bumped_ms >= self.health_resolution_ms:
            entry.bumped_ms = alive_ms
            self.pending.bump(hb.amphora_id, alive_ms)
            self.pending.arrivals.append(arrival.mono)
        return Applied.ACCEPTED

    def _keep_stats(self, entry: _Amphora, hb: Heartbeat, wall_ms: int) -> None:
        """Counters of one heartbeat in ``stats_every`` heartbeat intervals, by time.

        By time, not by sequence number: with N managers receiving round robin,
        each sees every Nth sequence number, and a test on the number could
        skip one amphora's statistics in every manager. Absolute counters lose
        nothing by being skipped (the next heartbeat carries them); deltas
        (Octavia v3) are always kept.
        """
        every = self.stats_every
        skip = every > 1 and not hb.counters_are_deltas
        # Octavia's heartbeats do not say their interval (0): assume the configured one.
        interval_ms = hb.interval_ms or self.late_after * 1000
        if skip and wall_ms - entry.stats_ms < (every - 0.5) * interval_ms:
            return
        entry.stats_ms = wall_ms
        self.pending.stats(hb)

    def _verdict(self, entry: _Amphora, hb: Heartbeat, now: float) -> bool | None:
        """Put what the rules say of this heartbeat in ``entry`` (cached for the
        steady state); whether it changes the cached statuses, None when its
        load balancer must be loaded first."""
        lb_id = entry.lb_id
        report = _report_hash(hb)
        lb_hash = self._lb_hash.get(lb_id) if lb_id is not None else 0
        if (
            entry.determined is not None
            and report == entry.last_report
            and lb_hash == entry.lb_hash
        ):
            return False  # same report, same topology: same outcome
        lb = self._lbs.get(lb_id) if lb_id is not None else None
        if lb_id is not None and lb is None:
            return None
        amphora = AmphoraTopology(hb.amphora_id, entry.status, entry.role, lb)
        outcome = status.evaluate_amphora(amphora, hb)
        if lb is not None:
            if outcome.changed:
                lb = status.apply(lb, outcome)
            lb_hash = self._cache_lb(lb, None if outcome.changed else lb_hash)
        entry.digest = status.digest(outcome.determined)
        entry.determined = pack_statuses(outcome.determined)
        entry.healthy, entry.last_report, entry.lb_hash = outcome.healthy, report, lb_hash
        if lb is not None and lb.provisioning_status == c.DELETED:
            # R27: not healthy for what it is, not for a count it cannot match.
            self._event(
                "deleted_load_balancer",
                hb.amphora_id,
                lb_id,
                reported=len({r.id for r in hb.listeners}),
            )
        elif lb is not None and not outcome.healthy:
            expected = sum(1 for listener in lb.listeners if listener.enabled)
            reported = len({r.id for r in hb.listeners})
            self._event(
                "listener_count_mismatch",
                hb.amphora_id,
                lb_id,
                reported=reported,
                expected=expected,
            )
        if lb_id is not None and (outcome.names_unknown_objects or not outcome.healthy):
            # The cache may be behind the API (a new member, PENDING_UPDATE,
            # a disabled listener): re-read, and evaluate again meanwhile.
            self._want_refresh(hb.amphora_id, lb_id, now)
            entry.last_report = 0
        return outcome.changed

    def _event(self, kind: str, amphora_id: Id, lb_id: Id | None, **detail: object) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(Event(kind, amphora_id, lb_id, detail))
        else:
            self.events_dropped += 1

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def _want_refresh(self, amphora_id: Id, lb_id: Id, now: float) -> None:
        if now - self._refreshed_at.get(lb_id, -1e18) < self.refresh_min_interval:
            return
        self._refreshed_at[lb_id] = now
        self._wanted.add(amphora_id)

    def _wait(self, arrival: Arrival) -> Applied:
        amp_id = arrival.heartbeat.amphora_id
        held = _hold(arrival)
        queue = self._waiting.get(amp_id)
        if queue is None:
            self._waiting[amp_id] = held  # alone: no list (most amphorae at first contact)
        elif isinstance(queue, list):
            if len(queue) >= WAITING_PER_AMPHORA:
                queue.pop(0)
                self.superseded += 1  # the newer ones carry its counters and liveness
            queue.append(held)
        else:
            self._waiting[amp_id] = [queue, held]
        self._wanted.add(amp_id)
        return Applied.QUEUED

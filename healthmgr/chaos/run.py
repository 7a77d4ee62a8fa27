"""One scenario's run: its simulated fleet, the faults' bookkeeping, the measurements.

A scenario (healthmgr/chaos/scenarios.py) gets a :class:`Run`. It brings up
a fleet (topology inserted, heartbeats beating to the managers round robin,
as agents do with several ``controller_ip_port_list`` entries), injects its
faults, ends them with a clean phase, and asks :meth:`Run.verdict` for the
standard invariants measured on the database and the managers; then
:meth:`Run.close` removes every row its amphorae caused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from healthmgr.chaos import invariants as inv
from healthmgr.chaos.deployment import Deployment, metric_sum
from healthmgr.chaos.fleet import Faults, Fleet, Topology, counters
from healthmgr.chaos.timeline import Sampler, Timeline
from healthmgr.chaos.topology import chunks, insert_topology, remove_topology
from healthmgr.db import models
from healthmgr.db.dbtime import utcnow
from healthmgr.rules import constants as C
from healthmgr.wire.ids import id_str
from healthmgr.wire.values import MemberState

Address = tuple[str, int]
REPLAY_CAPTURE = 8  # datagrams per amphora an attacker has captured
SLICES = 10  # a round is sent in this many parts spread over the interval


class ScenarioError(Exception):
    """The scenario could not run (the deployment not ready, a wait that never ended)."""


@dataclass(frozen=True)
class Params:
    """What the operator chose for every scenario of one invocation."""

    amphorae: int | None = None  # None: each scenario's own size
    long: bool = False  # the long versions: more amphorae, longer faults
    seed: int = 0
    margin: float = 0.25  # added to the failover bound: the check's own time, clocks
    max_rss_growth_mib: float = 64.0

    def size(self, short: int, long: int) -> int:
        if self.amphorae is not None:
            return self.amphorae
        return long if self.long else short

    def span(self, short: float, long: float) -> float:
        return long if self.long else short


@dataclass
class Result:
    scenario: str
    checks: list[inv.Check]
    figures: dict[str, Any]
    timeline: Timeline

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)


class Beater:
    """Sends the fleet's rounds every ``interval``, amphora ``i`` of round ``r`` to
    ``routes[(i + r) % len(routes)]`` (round robin, as the agent does)."""

    def __init__(self, fleet: Fleet, routes: Sequence[Address], interval: float) -> None:
        self.fleet = fleet
        self.routes = list(routes)
        self.interval = interval
        self.index_of = {a.id: i for i, a in enumerate(fleet.topology.amphorae)}
        self.round = 0  # the next round to send
        self.sent = 0
        self.captured: dict[int, deque[bytes]] = defaultdict(lambda: deque(maxlen=REPLAY_CAPTURE))
        self.hooks: list[Callable[[int], Iterable[tuple[int, bytes]]]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._thread = threading.Thread(target=self._run, name="chaos-beater", daemon=True)

    def start(self) -> Beater:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()

    def seq(self, round_: int) -> int:
        return self.fleet.start_seq + round_

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            with self.lock:
                r = self.round
                out: list[tuple[int, bytes]] = []
                for hook in self.hooks:
                    out.extend(hook(r))
                for d in self.fleet.datagrams(r):
                    index = self.index_of.get(d[6:22], 0)
                    out.append((index, d))
                routes = list(self.routes)
                self.round = r + 1
            # Spread over the interval by amphora, as real agents' phases are: a fleet
            # beating in step turns one lost round into many silent amphorae at once.
            slices: list[list[tuple[int, bytes]]] = [[] for _ in range(SLICES)]
            n = max(1, len(self.fleet))
            for index, d in out:
                slices[index * SLICES // n].append((index, d))
            for k, part in enumerate(slices):
                self._stop.wait(max(0.0, due + k * self.interval / SLICES - time.monotonic()))
                for index, d in part:
                    self._send(d, routes[(index + r) % len(routes)])
                    self.captured[index].append(d)
            due += self.interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _send(self, datagram: bytes, address: Address) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(datagram, address)
            self.sent += 1


_health = models.AmphoraHealth.__table__
_requests = models.FailoverRequest.__table__
_managers = models.ManagerRecord.__table__
_reports = models.AmphoraReport.__table__
_stats = models.ListenerStatistics.__table__
_amp = models.Amphora.__table__


class Run:
    """The context of one scenario."""

    def __init__(self, deployment: Deployment, name: str, params: Params) -> None:
        self.d = deployment
        self.t = deployment.timing
        self.name = name
        self.params = params
        self.timeline = Timeline(name)
        self.fleet: Fleet | None = None
        self.beater: Beater | None = None
        self.sampler: Sampler | None = None
        self.ids: list[str] = []
        self.died: dict[int, float] = {}  # index -> when it went silent (sampler time)
        self.revived: set[int] = set()
        self.excluded: set[int] = set()  # no statistics check (poisoned)
        self.member_changes: dict[int, list[tuple[int, bytes, MemberState]]] = defaultdict(list)
        self.figures: dict[str, Any] = {}
        self.clean_from: int | None = None
        self._metrics_before: dict[str, dict[str, float]] = {}
        self._rss_before: dict[str, int | None] = {}
        self._closers: list[Callable[[], None]] = []

    # -- the fleet ------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return self.t.heartbeat_interval

    def fleet_up(self, amphorae: int, *, faults: Faults | None = None,
                 routes: Sequence[Address] | None = None) -> Fleet:
        """Insert a fleet's topology, start beating, wait until every amphora reported."""
        seed = hash((self.params.seed, self.name)) & 0xFFFF_FFFF
        topology = Topology.generate(amphorae, seed=seed)
        start_seq = int(time.time() * 1000) % (1 << 40)  # fresh beyond any earlier run
        fleet = Fleet(topology, self.d.master, faults=faults or Faults(), seed=seed,
                      interval_ms=int(self.interval * 1000), start_seq=start_seq)
        insert_topology(self.d.engine, topology)
        self._closers.append(lambda: remove_topology(self.d.engine, topology))
        self.fleet = fleet
        self.ids = [id_str(a.id) for a in topology.amphorae]
        self.sampler = Sampler(self.d, lambda: self.ids, lambda: self.sent, self.timeline).start()
        self._closers.append(self.sampler.stop)
        self.beater = Beater(fleet, routes or self.manager_routes(), self.interval).start()
        self._closers.append(self.beater.stop)
        self.until(lambda: self._reported() == amphorae, "every amphora reported",
                   timeout=10 * self.interval + 10)
        self.baseline()
        self.event("fleet up")
        return fleet

    @property
    def sent(self) -> int:
        return self.beater.sent if self.beater else 0

    def manager_routes(self) -> list[Address]:
        return [m.address for m in self.d.managers]

    def set_routes(self, routes: Sequence[Address]) -> None:
        assert self.beater is not None
        with self.beater.lock:
            self.beater.routes = list(routes)

    def kill(self, indexes: Iterable[int], label: str | None = None) -> None:
        """These amphorae stop sending (for good, unless revived)."""
        assert self.fleet is not None and self.beater is not None
        at = self.event(label) if label else self.now()
        with self.beater.lock:
            for i in indexes:
                self.fleet.silenced.add(i)
                self.died.setdefault(i, at)

    def revive(self, indexes: Iterable[int], label: str | None = None) -> None:
        assert self.fleet is not None and self.beater is not None
        if label:
            self.event(label)
        with self.beater.lock:
            for i in indexes:
                self.fleet.silenced.discard(i)
                self.revived.add(i)

    def set_member(self, index: int, member: bytes, state: MemberState) -> None:
        """From the next round on, amphora ``index`` reports ``member`` as ``state``.

        Call from a beater hook (under its lock), which knows the round."""
        assert self.fleet is not None and self.beater is not None
        self.fleet.set_member_state(index, member, state)
        self.member_changes[index].append((self.beater.seq(self.beater.round), member, state))

    def clean(self) -> None:
        """Faults off: from the next round on every heartbeat goes straight through."""
        assert self.fleet is not None and self.beater is not None
        with self.beater.lock:
            self.fleet.faults = Faults()
            self.clean_from = self.beater.round
        self.event("clean")

    # -- time -----------------------------------------------------------------------------

    def now(self) -> float:
        return self.sampler.now() if self.sampler else 0.0

    def event(self, label: str) -> float:
        return self.sampler.event(label) if self.sampler else 0.0

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def within(self, predicate: Callable[[], Any], timeout: float) -> bool:
        """Whether ``predicate`` held within ``timeout`` seconds (a measurement, not an error)."""
        try:
            self.until(predicate, "", timeout)
        except ScenarioError:
            return False
        return True

    def until(self, predicate: Callable[[], Any], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(sa.exc.OperationalError):
                value = predicate()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"{self.name}: timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)

    # -- readings -------------------------------------------------------------------------

    def _reported(self) -> int:
        n = 0
        with self.d.engine.connect() as conn:
            for chunk in chunks(self.ids):
                n += conn.execute(sa.select(sa.func.count()).select_from(_reports)
                                  .where(_reports.c.amphora_id.in_(chunk))).scalar_one()
        return n

    def metrics_now(self) -> dict[str, dict[str, float]]:
        out = {}
        for m in self.d.managers:
            samples = m.metrics() if m.running else None
            if samples is not None:
                out[m.name] = samples
        return out

    def metric_delta(self, name: str, **labels: str) -> float | None:
        """Growth of a counter over the run, summed over the managers (None: no metrics).

        A manager restarted meanwhile counts from 0."""
        now = self.metrics_now()
        if not now:
            return None
        total = 0.0
        for manager, samples in now.items():
            value = metric_sum(samples, name, **labels)
            before = metric_sum(self._metrics_before.get(manager), name, **labels)
            total += value - before if value >= before else value
        return total

    def baseline(self) -> None:
        self._metrics_before = self.metrics_now()
        self._rss_before = {m.name: m.rss_bytes() for m in self.d.managers if m.running}
        if self.sampler:
            self.sampler.peak_rss.clear()

    def requests(self) -> dict[str, list[inv.Request]]:
        out: dict[str, list[inv.Request]] = defaultdict(list)
        with self.d.engine.connect() as conn:
            for chunk in chunks(self.ids):
                for r in conn.execute(sa.select(
                        _requests.c.amphora_id, _requests.c.state, _requests.c.requested_by,
                        _requests.c.requested_at, _requests.c.reason)
                        .where(_requests.c.amphora_id.in_(chunk))):
                    out[r.amphora_id].append(inv.Request(*r))
        return out

    def wait_clean_landed(self) -> None:
        """Until every live amphora's statistics hold a heartbeat of the clean phase."""
        assert self.beater is not None and self.clean_from is not None
        want = self.beater.seq(self.clean_from) + 1
        self.until(lambda: self.beater is not None and self.beater.round > self.clean_from + 2,
                   "two clean rounds", timeout=5 * self.interval + 5)
        live = [self.ids[i] for i in range(len(self.ids))
                if i not in self.dead_indexes() and i not in self.excluded]
        self.until(lambda: all(s >= want for s in self._last_seqs(live).values())
                   and len(self._last_seqs(live)) == len(live),
                   "the clean rounds in the database", timeout=10 * self.interval + 10)

    def _last_seqs(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.d.engine.connect() as conn:
            for chunk in chunks(ids):
                for a, seq in conn.execute(sa.select(_stats.c.amphora_id, sa.func.min(
                        _stats.c.last_seq)).where(_stats.c.amphora_id.in_(chunk))
                        .group_by(_stats.c.amphora_id)):
                    out[a] = int(seq)
        return out

    def dead_indexes(self) -> set[int]:
        return set(self.died) - self.revived

    # -- the verdict ---------------------------------------------------------------------

    def verdict(self, *extra: inv.Check, dead_in_time: bool = True,
                alive: Iterable[int] | None = None) -> Result:
        """The standard invariants, plus the scenario's own ``extra`` checks."""
        assert self.fleet is not None and self.beater is not None
        dead = sorted(self.dead_indexes())
        if dead_in_time:  # a breaker episode holds them until it closes: wait for it
            t = self.t
            self.within(lambda: all(inv.effective(self.requests().get(self.ids[i], ()))
                                    for i in dead),
                        timeout=3 * (t.failover_bound + self.params.margin)
                        + 4 * t.heartbeat_timeout + 5 + self._observer_wait(dead))
        requests = self.requests()
        alive_idx = [i for i in range(len(self.ids)) if i not in dead] if alive is None \
            else list(alive)
        checks = [inv.no_false_failovers(requests, [self.ids[i] for i in alive_idx])]
        snapshot = self._snapshot([self.ids[i] for i in dead])
        if dead_in_time:
            checks.append(inv.failed_over_once(
                requests, [inv.Dead(self.ids[i], snapshot["last_update"].get(self.ids[i]))
                           for i in dead],
                lambda dd, req: self._allowed(dd, req, snapshot)))
        checks += self._truth(alive_idx)
        checks.append(self._memory())
        checks += list(extra)
        self.figures.update(sent=self.sent, rounds=self.beater.round, amphorae=len(self.ids),
                            dead=len(dead), failover_requests=sum(map(len, requests.values())))
        return Result(self.name, checks, self.figures, self.timeline)

    def _observer_wait(self, dead: Sequence[int]) -> float:
        """observer_timeout when a dead amphora's last observer is a manager that is gone."""
        gone = {m.manager_id for m in self.d.managers if m.manager_id and not m.running}
        gone |= {m.name for m in self.d.managers if not m.running}
        observers = self._snapshot([self.ids[i] for i in dead])["observer"].values()
        return self.t.observer_timeout if gone & set(observers) else 0.0

    def _snapshot(self, dead_ids: Sequence[str]) -> dict[str, Any]:
        last_update: dict[str, dt.datetime] = {}
        observer: dict[str, str] = {}
        with self.d.engine.connect() as conn:
            for chunk in chunks(list(dead_ids)):
                last_update.update(conn.execute(sa.select(
                    _health.c.amphora_id, _health.c.last_update)
                    .where(_health.c.amphora_id.in_(chunk))).all())
                observer.update(conn.execute(sa.select(
                    _reports.c.amphora_id, _reports.c.observed_by)
                    .where(_reports.c.amphora_id.in_(chunk))).all())
            managers = conn.execute(sa.select(_managers.c.manager_id, _managers.c.healthy_since,
                                              _managers.c.heartbeat_at)).all()
        return {"last_update": last_update, "observer": observer,
                "healthy_since": {m.manager_id: m.healthy_since for m in managers},
                "heartbeat_at": {m.manager_id: m.heartbeat_at for m in managers}}

    def _allowed(self, dead: inv.Dead, req: inv.Request, snap: dict[str, Any]) -> float:
        """The failover bound for this request: later when a manager that had to judge it
        (the one that requested it, or the amphora's last observer) was in its grace."""
        t = self.t
        assert dead.last_update is not None
        base = t.heartbeat_timeout + t.failover_settle
        for manager in (req.requested_by, snap["observer"].get(dead.amphora_id)):
            since = snap["healthy_since"].get(manager)
            if since is not None:
                grace_end = (since - dead.last_update).total_seconds() + t.heartbeat_timeout
                base = max(base, grace_end)
        # An observer that died with the amphora's last heartbeat and never came back
        # cannot vouch for its silence: held until observer_timeout (docs/operations.md).
        observer = snap["observer"].get(dead.amphora_id)
        seen = snap["heartbeat_at"].get(observer)
        if seen is not None and (req.requested_at - seen).total_seconds() > 3.0:
            base = max(base, t.observer_timeout)
        # Outside a breaker episode: one that held it ends when the breaker closed.
        opened = [s.wall for s in self.timeline.samples if s.breaker_open and s.wall
                  and dead.last_update <= s.wall <= req.requested_at]
        if opened:
            period = self.sampler.period if self.sampler else 0.25
            base = max(base, (max(opened) - dead.last_update).total_seconds() + period)
        return base + t.health_check_interval + self.params.margin

    def _truth(self, alive: Sequence[int]) -> list[inv.Check]:
        """Statistics exact, statuses = newest report, refused rows counted."""
        assert self.fleet is not None and self.beater is not None
        fleet = self.fleet
        live = [i for i in alive if i not in self.dead_indexes()]
        ids = [self.ids[i] for i in live]
        stats: dict[str, list[tuple[int, int, int, int, int]]] = defaultdict(list)
        orders: dict[str, int] = {}
        found: dict[str, dict[str, str]] = defaultdict(dict)
        objects = {self.ids[i]: _objects(fleet.topology.amphorae[i]) for i in live}
        with self.d.engine.connect() as conn, conn.begin():  # one snapshot
            for chunk in chunks(ids):
                for r in conn.execute(sa.select(
                        _stats.c.amphora_id, _stats.c.last_seq, _stats.c.bytes_in,
                        _stats.c.bytes_out, _stats.c.total_connections,
                        _stats.c.request_errors).where(_stats.c.amphora_id.in_(chunk))):
                    stats[r[0]].append(tuple(int(v) for v in r[1:]))  # type: ignore[arg-type]
                orders.update((a, int(o)) for a, o in conn.execute(sa.select(
                    _reports.c.amphora_id, _reports.c.report_order)
                    .where(_reports.c.amphora_id.in_(chunk))))
            for table, kind in ((models.Member, "member"), (models.Pool, "pool"),
                                (models.Listener, "listener"), (models.LoadBalancer, "lb")):
                tbl = table.__table__
                wanted = {o: a for a, objs in objects.items() for o in objs[kind]}
                for chunk in chunks(list(wanted)):
                    for oid, status in conn.execute(sa.select(tbl.c.id, tbl.c.operating_status)
                                                    .where(tbl.c.id.in_(chunk))):
                        found[wanted[oid]][oid] = status
        newest = {}
        if self.clean_from is not None:
            want = self.beater.seq(self.clean_from) + 1
            newest = {a: want for a in ids}
        exact_ids = [self.ids[i] for i in live if i not in self.excluded]
        checks = [inv.stats_exact(stats, exact_ids, counters, newest_at_least=newest)]
        expected = {self.ids[i]: self._expected_statuses(i, orders.get(self.ids[i]))
                    for i in live}
        checks.append(inv.statuses_newest(found, expected))
        # A poisoned amphora's rows the database does not hold as sent: missing, or
        # stopped before the clean phase (each refused flush is one rejected row).
        want = self.beater.seq(self.clean_from) + 1 if self.clean_from is not None else 0
        refused = 0
        for i in live:
            if i in self.excluded:
                rows = stats.get(self.ids[i], [])
                refused += len(self.fleet.topology.amphorae[i].listeners) - len(rows)
                refused += sum(1 for row in rows if row[0] < want)
        checks.append(inv.refused_counted(self.metric_delta("healthmgr_rows_rejected_total"),
                                          refused))
        self.figures["refused_rows"] = refused
        return checks

    def _expected_statuses(self, index: int, seq: int | None) -> dict[str, str]:
        assert self.fleet is not None
        amphora = self.fleet.topology.amphorae[index]
        states: dict[bytes, MemberState] = {}
        for from_seq, member, state in self.member_changes.get(index, []):
            if seq is not None and from_seq <= seq:
                states[member] = state
        out: dict[str, str] = {}
        degraded = False
        for listener in amphora.listeners:
            out[id_str(listener.id)] = C.ONLINE
            for pool in listener.pools:
                errors = False
                for m in pool.members:
                    status = inv.MEMBER_STATUS[states.get(m, MemberState.UP)]
                    out[id_str(m)] = status
                    errors |= status == C.ERROR
                out[id_str(pool.id)] = C.DEGRADED if errors else C.ONLINE
                degraded |= errors
        out[id_str(amphora.load_balancer_id)] = C.DEGRADED if degraded else C.ONLINE
        return out

    def _memory(self) -> inv.Check:
        peak = dict(self.sampler.peak_rss) if self.sampler else {}
        return inv.memory_bounded(self._rss_before, peak, self.params.max_rss_growth_mib)

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop beating and sampling, remove what this run created."""
        for step in reversed(self._closers):
            with contextlib.suppress(Exception):
                step()
        self._closers.clear()


def _objects(amphora: Any) -> dict[str, list[str]]:
    return {
        "member": [id_str(m) for li in amphora.listeners for p in li.pools for m in p.members],
        "pool": [id_str(p.id) for li in amphora.listeners for p in li.pools],
        "listener": [id_str(li.id) for li in amphora.listeners],
        "lb": [id_str(amphora.load_balancer_id)],
    }


# -- before a scenario ---------------------------------------------------------------------


def wait_ready(deployment: Deployment, timeout: float) -> None:
    """Until every live manager is healthy past its grace and no breaker is open."""
    from healthmgr.db.dbtime import db_now

    t = deployment.timing

    def ready() -> bool:
        with deployment.engine.connect() as conn:
            now = db_now(conn)
            rows = conn.execute(sa.select(_managers).where(_managers.c.stopped_at.is_(None))
                                .where(_managers.c.heartbeat_at
                                       >= now - dt.timedelta(seconds=3))).all()
        if not rows:
            return False
        return all(not r.impaired and not r.breaker_open and r.healthy_since is not None
                   and (now - r.healthy_since).total_seconds() >= t.heartbeat_timeout
                   for r in rows)

    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"the managers are not ready after {timeout:g} s (none live, one impaired, "
                "in its start-up grace, or a circuit breaker open): see `healthmgr health`")
        time.sleep(0.1)


__all__ = ["Beater", "Params", "Result", "Run", "ScenarioError", "utcnow", "wait_ready"]

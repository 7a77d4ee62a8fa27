"""One scenario's run: its simulated fleet, the faults' bookkeeping, the measurements.

A scenario (healthmgr/chaos/scenarios.py) gets a :class:`Run`. It brings up
a fleet (topology inserted, heartbeats beating to the managers round robin,
as agents do with several ``controller_ip_port_list`` entries) and, for some,
real amphorae (:meth:`Run.real_up`), injects its faults, ends them with a
clean phase, and asks :meth:`Run.verdict` for the standard invariants
measured on the database and the managers; then :meth:`Run.close` stops what
it started and removes every row its amphorae caused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from healthmgr.chaos import invariants as inv
from healthmgr.chaos.amphora import RealAmphora, haproxy_binary
from healthmgr.chaos.deployment import Deployment, Manager, metric_sum
from healthmgr.chaos.fleet import AmphoraTopo, Faults, Fleet, Topology, counters
from healthmgr.chaos.netns import LinkedNamespace
from healthmgr.chaos.timeline import Sampler, Timeline
from healthmgr.chaos.topology import chunks, insert_topology, remove_topology, retire
from healthmgr.chaos.udp_relay import UdpFaults, UdpRelay
from healthmgr.db import models
from healthmgr.db.dbtime import utcnow
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
        # Where each recent datagram of an amphora went first: a replay or a duplicate goes
        # to that manager, whose replay window must reject it. (Another manager never saw
        # it and takes it as a late heartbeat of its share: harmless, its stamp proves no
        # new life and newest wins, but not what the replay invariants measure.)
        self._first_route: dict[int, dict[bytes, Address]] = defaultdict(dict)
        self.hooks: list[Callable[[int], Iterable[tuple[int, bytes]]]] = []
        # Every round to every manager until each knows the whole new fleet: a manager
        # meeting many new amphorae loads their topology first, and at a fast interval
        # that can hold their heartbeats for longer than one: their share would look
        # silent (and open a breaker) before the scenario even began.
        self.warming = True
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
                # Stamped when its slice goes out, as an agent stamps its heartbeat: a
                # stamp from the round's start would age the last slices by most of an
                # interval (a manager takes a heartbeat as proof of life at its stamp).
                for d in self.fleet.datagrams(r, offset_ms=self._offset_ms):
                    index = self.index_of.get(d[6:22], 0)
                    out.append((index, d))
                routes = list(self.routes)
                self.round = r + 1
            # Spread over the interval by amphora, as real agents' phases are: a fleet
            # beating in step turns one lost round into many silent amphorae at once.
            slices: list[list[tuple[int, bytes]]] = [[] for _ in range(SLICES)]
            for index, d in out:
                slices[self._slice(index)].append((index, d))
            for k, part in enumerate(slices):
                self._stop.wait(max(0.0, due + k * self.interval / SLICES - time.monotonic()))
                for index, d in part:
                    first = self.route_of(index, d)
                    if self.warming:
                        targets = routes
                    elif first is not None:
                        targets = [first]
                    else:
                        targets = [routes[(index + r) % len(routes)]]
                    for route in targets:
                        self._send(d, route)
                    if first is None:
                        self._remember(index, d, targets[0])
                    self.captured[index].append(d)
            due += self.interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def route_of(self, index: int, datagram: bytes) -> Address | None:
        """Where this datagram of amphora ``index`` was sent first (None: not recently)."""
        return self._first_route[index].get(datagram)

    def _remember(self, index: int, datagram: bytes, route: Address) -> None:
        seen = self._first_route[index]
        seen[datagram] = route
        if len(seen) > 4 * REPLAY_CAPTURE:
            del seen[next(iter(seen))]  # the oldest

    def _slice(self, index: int) -> int:
        return index * SLICES // max(1, len(self.fleet))

    def _offset_ms(self, index: int) -> int:
        return int(self._slice(index) * self.interval * 1000 / SLICES)

    def _send(self, datagram: bytes, address: Address) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(datagram, address)
            self.sent += 1


_health = models.AmphoraHealth
_requests = models.FailoverRequest
_managers = models.ManagerRecord
_reports = models.AmphoraReport
_stats = models.ListenerStatistics
_amp = models.Amphora


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
        self.extra_ids: list[str] = []  # real amphorae (healthmgr/chaos/amphora.py)
        self.real: list[RealAmphora] = []
        self.died: dict[int, float] = {}  # index -> when it went silent (sampler time)
        self.revived: set[int] = set()
        self.excluded: set[int] = set()  # no statistics check (poisoned)
        self.member_changes: dict[int, list[tuple[int, bytes, MemberState]]] = defaultdict(list)
        self.figures: dict[str, Any] = {}
        self.clean_from: int | None = None
        self._metrics_before: dict[str, dict[str, float]] = {}
        self._rss_before: dict[str, int | None] = {}
        self._closers: list[Callable[[], None]] = []
        self._work: Path | None = None

    # -- the fleet ------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return self.t.heartbeat_interval

    @property
    def bound(self) -> float:
        """The failover bound with the margin: how long a dead amphora may wait."""
        return self.t.failover_bound + self.params.margin

    def fleet_up(
        self,
        amphorae: int,
        *,
        faults: Faults | None = None,
        routes: Sequence[Address] | None = None,
    ) -> Fleet:
        """Insert a fleet's topology, start beating, wait until every amphora reported."""
        seed = hash((self.params.seed, self.name)) & 0xFFFF_FFFF
        topology = Topology.generate(amphorae, seed=seed)
        start_seq = int(time.time() * 1000) % (1 << 40)  # fresh beyond any earlier run
        fleet = Fleet(
            topology,
            self.d.master,
            faults=faults or Faults(),
            seed=seed,
            interval_ms=int(self.interval * 1000),
            start_seq=start_seq,
        )
        insert_topology(self.d.engine, topology)
        self._closers.append(lambda: remove_topology(self.d.engine, topology))
        self.fleet = fleet
        self.ids = [id_str(a.id) for a in topology.amphorae]
        self.sampler = Sampler(
            self.d, lambda: self.ids + self.extra_ids, lambda: self.sent, self.timeline
        ).start()
        self._closers.append(self.sampler.stop)
        tracked = {m.name: self._tracked(m) for m in self.d.managers}
        self.beater = Beater(fleet, routes or self.manager_routes(), self.interval).start()
        self._closers.append(self.beater.stop)
        ids = list(self.ids)
        self._closers.append(lambda: retire(self.d.engine, ids))  # before the fleet stops
        self.until(
            lambda: self._reported(self.ids) == amphorae,
            "every amphora reported",
            timeout=10 * self.interval + 10,
        )
        self.within(
            lambda: all(
                self._tracked(m) >= before + amphorae
                for m in self.d.managers
                if (before := tracked[m.name]) is not None
            ),
            timeout=10 * self.interval + 5,
        )  # one without metrics is not waited for
        if len(self.beater.routes) > 1:
            self.beater.warming = False
            switched = self.beater.round
            self.until(
                lambda: self.beater is not None and self.beater.round > switched + 1,
                "a round robin round",
                timeout=5 * self.interval + 5,
            )
        self.until(
            self._steady,
            "the new fleet steady (none silent, no breaker open)",
            timeout=4 * self.t.heartbeat_timeout + 10,
        )
        self.baseline()
        self.event("fleet up")
        return fleet

    def real_up(
        self,
        placements: Sequence[tuple[Sequence[Address], LinkedNamespace | None]],
    ) -> list[RealAmphora]:
        """Real amphorae (HAProxy and amphora-agent), one per placement: the routes its
        agent sends to, the namespace it runs in (None: this one). Their topology is
        inserted (and removed at the end); returns once each one's report landed."""
        haproxy = haproxy_binary()
        if haproxy is None:
            raise ScenarioError("real amphorae need haproxy (not found on PATH)")
        seed = hash((self.params.seed, self.name, "real")) & 0xFFFF_FFFF
        topology = Topology.generate(len(placements), seed=seed)
        insert_topology(self.d.engine, topology)
        self._closers.append(lambda: remove_topology(self.d.engine, topology))
        amps = []
        for i, (topo, (routes, ns)) in enumerate(zip(topology.amphorae, placements, strict=True)):
            amp = RealAmphora(topo, self.work / f"amphora-{i}", ns)
            self._closers.append(amp.close)
            amps.append(amp.start(haproxy, self.d.master, routes, self.interval))
        self.real += amps
        ids = [a.id for a in amps]
        self._closers.append(lambda: retire(self.d.engine, ids))
        self.extra_ids += [a.id for a in amps]

        def reported() -> bool:
            problems = [p for a in amps if (p := a.problem())]
            if problems:
                raise ScenarioError(problems[0])
            return self._reported([a.id for a in amps]) == len(amps)

        self.until(reported, "every real amphora reported", timeout=20 * self.interval + 20)
        self.event(f"{len(amps)} real amphorae up")
        return amps

    def udp_relays(self, listen_host: str = "127.0.0.1") -> list[UdpRelay]:
        """A UDP chaos relay in front of every manager (no faults until ``set``), listening
        on ``listen_host``; closed at the end of the run."""
        relays = []
        for i, m in enumerate(self.d.managers):
            relay = UdpRelay(
                m.address, UdpFaults(), listen=(listen_host, 0), seed=self.params.seed + i
            )
            relays.append(self.enter(relay))
        return relays

    def relays_drained(self, relays: Sequence[UdpRelay]) -> None:
        """Until the relays hold nothing back (what they delayed was forwarded)."""
        self.until(
            lambda: not any(r.pending for r in relays),
            "the relays drained",
            timeout=10 * self.interval + 5,
        )

    def enter(self, cm: contextlib.AbstractContextManager[Any]) -> Any:
        """Enter ``cm`` for the rest of the run (left at close, after what came later)."""
        value = cm.__enter__()
        self._closers.append(lambda: cm.__exit__(None, None, None))
        return value

    @property
    def work(self) -> Path:
        """A directory of this run's own (removed at close), with a short path: HAProxy's
        stats socket lives there (a Unix socket's path is at most about 100 bytes)."""
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix="hm-chaos-"))
            work = self._work
            self._closers.insert(0, lambda: shutil.rmtree(work, ignore_errors=True))
        return self._work

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
                    f"{self.name}: timed out after {timeout:g} s waiting for {what}"
                )
            time.sleep(0.05)

    # -- readings -------------------------------------------------------------------------

    @staticmethod
    def _tracked(manager: Manager) -> float | None:
        """Amphorae in the manager's in-memory view (None: no metrics)."""
        samples = manager.metrics() if manager.running else None
        return None if samples is None else metric_sum(samples, "healthmgr_tracked_amphorae")

    def _steady(self) -> bool:
        """Before the faults: none of the fleet silent two intervals, no breaker open."""
        from healthmgr.db.dbtime import db_now

        cut = utcnow() - dt.timedelta(seconds=2 * self.interval)
        with self.d.engine.connect() as conn:
            fresh = db_now(conn) - dt.timedelta(seconds=3)
            silent = 0
            for chunk in chunks(self.ids):
                silent += conn.execute(
                    sa.select(sa.func.count())
                    .select_from(_health)
                    .where(_health.c.amphora_id.in_(chunk))
                    .where(_health.c.last_update < cut)
                ).scalar_one()
            opened = conn.execute(
                sa.select(sa.func.count())
                .select_from(_managers)
                .where(_managers.c.breaker_open == sa.true())
                .where(_managers.c.stopped_at.is_(None))
                .where(_managers.c.heartbeat_at >= fresh)
            ).scalar_one()
        return silent == 0 and opened == 0

    def _reported(self, ids: Sequence[str]) -> int:
        n = 0
        with self.d.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                n += conn.execute(
                    sa.select(sa.func.count())
                    .select_from(_reports)
                    .where(_reports.c.amphora_id.in_(chunk))
                ).scalar_one()
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

    def requests(self, ids: Sequence[str] | None = None) -> dict[str, list[inv.Request]]:
        out: dict[str, list[inv.Request]] = defaultdict(list)
        with self.d.engine.connect() as conn:
            for chunk in chunks(list(self.ids if ids is None else ids)):
                for r in conn.execute(
                    sa.select(
                        _requests.c.amphora_id,
                        _requests.c.state,
                        _requests.c.requested_by,
                        _requests.c.requested_at,
                        _requests.c.reason,
                    ).where(_requests.c.amphora_id.in_(chunk))
                ):
                    out[r.amphora_id].append(inv.Request(*r))
        return out

    def wait_clean_landed(self) -> None:
        """Until every live amphora's statistics hold a heartbeat of the clean phase."""
        assert self.beater is not None and self.clean_from is not None
        want = self.beater.seq(self.clean_from) + 1
        self.until(
            lambda: self.beater is not None and self.beater.round > self.clean_from + 1,
            "two clean rounds sent",
            timeout=5 * self.interval + 5,
        )
        live = [
            self.ids[i]
            for i in range(len(self.ids))
            if i not in self.dead_indexes() and i not in self.excluded
        ]
        self.until(
            lambda: (
                all(s >= want for s in self._last_seqs(live).values())
                and len(self._last_seqs(live)) == len(live)
            ),
            "the clean rounds in the database",
            timeout=10 * self.interval + 10,
        )

    def _last_seqs(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.d.engine.connect() as conn:
            for chunk in chunks(ids):
                for a, seq in conn.execute(
                    sa.select(_stats.c.amphora_id, sa.func.min(_stats.c.last_seq))
                    .where(_stats.c.amphora_id.in_(chunk))
                    .group_by(_stats.c.amphora_id)
                ):
                    out[a] = int(seq)
        return out

    def dead_indexes(self) -> set[int]:
        return set(self.died) - self.revived

    # -- the verdict ---------------------------------------------------------------------

    def verdict(
        self, *extra: inv.Check, dead_in_time: bool = True, alive: Iterable[int] | None = None
    ) -> Result:
        """The standard invariants, plus the scenario's own ``extra`` checks."""
        assert self.fleet is not None and self.beater is not None
        dead = sorted(self.dead_indexes())
        if dead_in_time:  # a breaker episode holds them until it closes: wait for it
            t = self.t
            self.within(
                lambda: all(inv.effective(self.requests().get(self.ids[i], ())) for i in dead),
                timeout=3 * (t.failover_bound + self.params.margin)
                + 4 * t.heartbeat_timeout
                + 5
                + self._observer_wait(dead),
            )
            self.sleep(2 * t.health_check_interval)  # a second request would show by now
        requests = self.requests()
        alive_idx = (
            [i for i in range(len(self.ids)) if i not in dead] if alive is None else list(alive)
        )
        checks = [inv.no_false_failovers(requests, [self.ids[i] for i in alive_idx])]
        snapshot = self._snapshot([self.ids[i] for i in dead])
        if dead_in_time:
            checks.append(
                inv.failed_over_once(
                    requests,
                    [inv.Dead(self.ids[i], snapshot["last_update"].get(self.ids[i])) for i in dead],
                    lambda dd, req: self._allowed(dd, req, snapshot),
                )
            )
        checks += self._truth(alive_idx)
        checks.append(self._memory())
        checks += list(extra)
        period = self.sampler.period if self.sampler else 0.0
        self.figures.update(
            sent=self.sent,
            rounds=self.beater.round,
            amphorae=len(self.ids),
            dead=len(dead),
            failover_requests=sum(map(len, requests.values())),
            breaker_open_s=round(
                period * sum(1 for s in self.timeline.samples if s.breaker_open), 2
            ),
        )
        return Result(self.name, checks, self.figures, self.timeline)

    def failed_over_once(
        self,
        ids: Sequence[str],
        snapshot: dict[str, Any] | None = None,
    ) -> inv.Check:
        """The standard check for amphorae (any of this run's) that died: each failed over
        exactly once, in time; ``snapshot`` (of :meth:`snapshot`) taken when they were dead
        (an amphora that beats again moves its last_update on)."""
        snap = snapshot or self.snapshot(ids)
        return inv.failed_over_once(
            self.requests(ids),
            [inv.Dead(a, snap["last_update"].get(a)) for a in ids],
            lambda dd, req: self._allowed(dd, req, snap),
        )

    def snapshot(self, ids: Sequence[str]) -> dict[str, Any]:
        """Their last_update and last observer, and every manager's grace (for the bound)."""
        return self._snapshot(ids)

    def statuses(self, amphorae: Sequence[AmphoraTopo]) -> dict[str, dict[str, str]]:
        """Per amphora, what the database shows of its objects' operating statuses."""
        with self.d.engine.connect() as conn:
            return _read_statuses(conn, {id_str(a.id): _objects(a) for a in amphorae})

    def _observer_wait(self, dead: Sequence[int]) -> float:
        """observer_timeout when a dead amphora's last observer is a manager that is gone
        (its liveness row older than observer_fresh)."""
        from healthmgr.db.dbtime import db_now

        snap = self._snapshot([self.ids[i] for i in dead])
        with self.d.engine.connect() as conn:
            now = db_now(conn)
        seen = [snap["heartbeat_at"].get(o) for o in snap["observer"].values()]
        gone = any(
            s is not None and (now - s).total_seconds() > self.t.observer_fresh for s in seen
        )
        return self.t.observer_timeout if gone else 0.0

    def _snapshot(self, dead_ids: Sequence[str]) -> dict[str, Any]:
        last_update: dict[str, dt.datetime] = {}
        observer: dict[str, str] = {}
        with self.d.engine.connect() as conn:
            for chunk in chunks(list(dead_ids)):
                last_update.update(
                    conn.execute(
                        sa.select(_health.c.amphora_id, _health.c.last_update).where(
                            _health.c.amphora_id.in_(chunk)
                        )
                    ).all()
                )
                observer.update(
                    conn.execute(
                        sa.select(_reports.c.amphora_id, _reports.c.observed_by).where(
                            _reports.c.amphora_id.in_(chunk)
                        )
                    ).all()
                )
            managers = conn.execute(
                sa.select(
                    _managers.c.manager_id, _managers.c.healthy_since, _managers.c.heartbeat_at
                )
            ).all()
        return {
            "last_update": last_update,
            "observer": observer,
            "healthy_since": {m.manager_id: m.healthy_since for m in managers},
            "heartbeat_at": {m.manager_id: m.heartbeat_at for m in managers},
        }

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
        if seen is not None and (req.requested_at - seen).total_seconds() > t.observer_fresh:
            base = max(base, t.observer_timeout)
        # Outside a breaker episode: one that held it ends when the breaker closed.
        opened = [
            s.wall
            for s in self.timeline.samples
            if s.breaker_open and s.wall and dead.last_update <= s.wall <= req.requested_at
        ]
        if opened:
            period = self.sampler.period if self.sampler else 0.25
            base = max(base, (max(opened) - dead.last_update).total_seconds() + period)
        return base + t.check_slack + self.params.margin

    def _truth(self, alive: Sequence[int]) -> list[inv.Check]:
        """Statistics exact, statuses = newest report, refused rows counted."""
        assert self.fleet is not None and self.beater is not None
        fleet = self.fleet
        live = [i for i in alive if i not in self.dead_indexes()]
        ids = [self.ids[i] for i in live]
        stats: dict[str, list[tuple[int, int, int, int, int]]] = defaultdict(list)
        orders: dict[str, int] = {}
        objects = {self.ids[i]: _objects(fleet.topology.amphorae[i]) for i in live}
        with self._snapshot_connection() as conn, conn.begin():
            for chunk in chunks(ids):
                for r in conn.execute(
                    sa.select(
                        _stats.c.amphora_id,
                        _stats.c.last_seq,
                        _stats.c.bytes_in,
                        _stats.c.bytes_out,
                        _stats.c.total_connections,
                        _stats.c.request_errors,
                    ).where(_stats.c.amphora_id.in_(chunk))
                ):
                    stats[r[0]].append(tuple(int(v) for v in r[1:]))  # type: ignore[arg-type]
                orders.update(
                    (a, int(o))
                    for a, o in conn.execute(
                        sa.select(_reports.c.amphora_id, _reports.c.report_order).where(
                            _reports.c.amphora_id.in_(chunk)
                        )
                    )
                )
            found = _read_statuses(conn, objects)
        newest = {}
        if self.clean_from is not None:
            want = self.beater.seq(self.clean_from) + 1
            newest = {a: want for a in ids}
        exact_ids = [self.ids[i] for i in live if i not in self.excluded]
        checks = [inv.stats_exact(stats, exact_ids, counters, newest_at_least=newest)]
        expected = {self.ids[i]: self._expected_statuses(i, orders.get(self.ids[i])) for i in live}
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
        checks.append(
            inv.refused_counted(self.metric_delta("healthmgr_rows_rejected_total"), refused)
        )
        self.figures["refused_rows"] = refused
        return checks

    @contextlib.contextmanager
    def _snapshot_connection(self) -> Iterator[sa.Connection]:
        """A connection whose transaction reads one snapshot: REPEATABLE READ on the
        servers (PostgreSQL's READ COMMITTED would let a flush commit between reading the
        report order and the statuses, or between two tables); SQLite's is one already."""
        with self.d.engine.connect() as conn:
            if self.d.server_db:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def _expected_statuses(self, index: int, seq: int | None) -> dict[str, str]:
        assert self.fleet is not None
        states: dict[bytes, MemberState] = {}
        for from_seq, member, state in self.member_changes.get(index, []):
            if seq is not None and from_seq <= seq:
                states[member] = state
        return inv.expected_statuses(self.fleet.topology.amphorae[index], states)

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


def relay_counts(relays: Sequence[UdpRelay]) -> dict[str, int]:
    """What the relays did, summed."""
    total: Counter[str] = Counter()
    for r in relays:
        total.update(vars(r.counts))
    return dict(total)


def _read_statuses(
    conn: sa.Connection,
    objects: dict[str, dict[str, list[str]]],
) -> dict[str, dict[str, str]]:
    """Per amphora, the operating status of each of its objects (of :func:`_objects`)."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for tbl, kind in (
        (models.Member, "member"),
        (models.Pool, "pool"),
        (models.Listener, "listener"),
        (models.LoadBalancer, "lb"),
    ):
        wanted = {o: a for a, objs in objects.items() for o in objs[kind]}
        for chunk in chunks(list(wanted)):
            for oid, status in conn.execute(
                sa.select(tbl.c.id, tbl.c.operating_status).where(tbl.c.id.in_(chunk))
            ):
                found[wanted[oid]][oid] = status
    return found


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
            rows = conn.execute(
                sa.select(_managers)
                .where(_managers.c.stopped_at.is_(None))
                .where(_managers.c.heartbeat_at >= now - dt.timedelta(seconds=3))
            ).all()
        if not rows:
            return False
        return all(
            not r.impaired
            and not r.breaker_open
            and r.healthy_since is not None
            and (now - r.healthy_since).total_seconds() >= t.heartbeat_timeout
            for r in rows
        )

    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"the managers are not ready after {timeout:g} s (none live, one impaired, "
                "in its start-up grace, or a circuit breaker open): see `healthmgr health`"
            )
        time.sleep(0.1)


__all__ = ["Beater", "Params", "Result", "Run", "ScenarioError", "utcnow", "wait_ready"]

"""The scenarios of ``healthmgr-chaos``: what each breaks, and what must hold anyway.

Every scenario brings up a simulated fleet of its own (its topology inserted,
removed at the end), waits until every amphora reported, injects its faults,
ends them, lets a clean phase land, and measures the standard invariants
(healthmgr/chaos/invariants.py) plus its own. Durations are multiples of the
deployment's ``heartbeat_interval`` (i), ``heartbeat_timeout`` (T) and the
failover bound B = T + failover_settle + health_check_interval, so a scenario
means the same against a deployment with production timings as against the
fast managers the tool starts itself (i = 0.5 s, T = 3 s).

Faults last about B: long enough for a live amphora's troubled silence to
ripen into a false failover. The dead are not waited for with a fixed sleep:
the verdict waits until each has its request (or the wait's bound passed)
and judges the latency against the bound.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from healthmgr.chaos import invariants as inv
from healthmgr.chaos.amphora import haproxy_binary
from healthmgr.chaos.deployment import Deployment
from healthmgr.chaos.fleet import Faults
from healthmgr.chaos.realparts import agents_lossy, partition
from healthmgr.chaos.run import Params, Result, Run, ScenarioError, relay_counts
from healthmgr.chaos.udp_relay import UdpFaults
from healthmgr.db import models
from healthmgr.rules import constants as C
from healthmgr.wire import envelope
from healthmgr.wire.values import MemberState

Scenario = Callable[[Run], Result]


@dataclass(frozen=True)
class Spec:
    name: str
    summary: str
    run: Scenario
    managers: int = 1  # at least
    server_db: bool = False  # several managers share a PostgreSQL/MariaDB database
    db_relay: bool = False  # a relay in front of a manager's database connection
    signals: bool = False  # the managers' process ids (and a restart, for one manager)
    root: bool = False  # network namespaces
    haproxy: bool = False  # real HAProxy and amphora-agent (healthmgr/chaos/amphora.py)

    def unmet(self, d: Deployment) -> str | None:
        """Why this scenario cannot run against ``d`` (None: it can)."""
        if len(d.managers) < self.managers:
            return f"needs {self.managers} managers (has {len(d.managers)})"
        if self.server_db and not d.server_db:
            return "needs a PostgreSQL or MariaDB database (several managers)"
        if self.db_relay and not (
            d.managers[0].db_relay or (self.name == "db-outage" and d.dialect == "sqlite")
        ):
            return "needs a TCP relay in front of the first manager's database (--db-relay)"
        if self.signals and d.managers[0].pid is None:
            return "needs the first manager's process id (--pid)"
        if self.signals and not d.managers[0].started_here and len(d.managers) < 2:
            return "needs 2 managers when it cannot restart the one it stops"
        if self.root and os.geteuid() != 0:
            return "needs root (network namespaces)"
        if self.haproxy and haproxy_binary() is None:
            return "needs haproxy (real amphorae): not found"
        return None


# -- helpers -------------------------------------------------------------------------------


def _threshold(run: Run, fleet: int) -> int | None:
    """The breaker's threshold for a fleet of this size (None: no breaker)."""
    value = run.t.failover_threshold
    if value == "off":
        return None
    if isinstance(value, str) and value.endswith("%"):
        return max(3, math.ceil(fleet * float(value[:-1]) / 100))
    return int(value)


def _killable(run: Run, fleet: int, wanted: int) -> int:
    """How many may die at once and still be failed over in time: below the
    breaker's threshold and within the failover rate limit (half the threshold)."""
    threshold = _threshold(run, fleet)
    if threshold is None:
        return wanted
    return max(1, min(wanted, threshold - 1, max(1, threshold // 2)))


def _bound(run: Run) -> float:
    return run.bound


def _accepted_within(run: Run, honest: int) -> inv.Check:
    accepted = run.metric_delta("healthmgr_heartbeats_total", result="accepted")
    if accepted is None:
        return inv.Check("nothing false accepted", None, "no metrics", f"<= {honest}")
    return inv.simple(
        "nothing false accepted",
        accepted <= honest,
        f"{accepted:g} accepted",
        f"<= {honest} genuine",
        "more heartbeats accepted than genuine ones were sent",
    )


# -- lossy network ------------------------------------------------------------------------


def lossy(run: Run) -> Result:
    """Loss, duplication, reordering, delay and corruption between the fleet and every
    manager (the UDP relay); amphorae die meanwhile."""
    n = run.params.size(50, 500)
    i = run.interval
    faults = UdpFaults.lossy(i, corrupt=0.02)
    relays = run.udp_relays()
    fleet = run.fleet_up(n, routes=[r.address for r in relays])
    honest_before = fleet.counts.honest
    for r in relays:
        r.set(faults)
    run.event("loss, dup, reorder, delay, corrupt")
    run.kill(range(_killable(run, n, run.params.size(1, 10))), "amphorae die")
    run.sleep(run.params.span(_bound(run), 4 * _bound(run)))
    for r in relays:
        r.set(UdpFaults())
    run.clean()
    run.wait_clean_landed()
    run.figures["relay"] = relay_counts(relays)
    honest = fleet.counts.honest - honest_before
    return run.verdict(_accepted_within(run, honest + n * 2))


# -- replay and forgery --------------------------------------------------------------------


def replay_forgery(run: Run) -> Result:
    """Forged heartbeats (another amphora's key) and replayed ones; a dead amphora's
    captured heartbeats replayed over and over must not keep it alive."""
    n = run.params.size(20, 200)
    fleet = run.fleet_up(n)
    assert run.beater is not None
    forged_before, replayed_before = fleet.counts.forged, fleet.counts.replayed
    attack = {"sent": 0}
    victims = list(range(_killable(run, n, run.params.size(1, 5))))

    def replay_attack(round_: int) -> list[tuple[int, bytes]]:
        out = [
            (v, d) for v in victims if v in fleet.silenced for d in run.beater.captured.get(v, ())
        ]  # type: ignore[union-attr]
        attack["sent"] += len(out)
        return out

    with run.beater.lock:
        fleet.faults = Faults(forged=0.2, replay=0.2)
        run.beater.hooks.append(replay_attack)
    run.event("forged + replayed")
    run.kill(victims, "victims die; their heartbeats replayed")
    run.sleep(run.params.span(_bound(run), 4 * _bound(run)))
    run.clean()
    with run.beater.lock:
        run.beater.hooks.remove(replay_attack)
    run.wait_clean_landed()
    forged = fleet.counts.forged - forged_before
    replayed = fleet.counts.replayed - replayed_before + attack["sent"]
    bad_sig = run.metric_delta("healthmgr_heartbeats_total", result="bad_signature")
    rejected = sum(
        run.metric_delta("healthmgr_heartbeats_total", result=r) or 0 for r in ("replayed", "stale")
    )
    run.figures.update(forged=forged, replayed=replayed, attack_replays=attack["sent"])
    checks = [
        inv.simple(
            "every forgery rejected",
            bad_sig == forged,
            f"{bad_sig} bad_signature",
            f"= {forged} forged",
            "forged heartbeats not counted as bad_signature",
        )
        if bad_sig is not None
        else inv.Check("every forgery rejected", None, "no metrics", "-"),
        inv.simple(
            "every replay rejected",
            rejected >= replayed,
            f"{rejected:g} replayed/stale",
            f">= {replayed} replays",
            "replays were not all rejected",
        ),
    ]
    return run.verdict(*checks)


# -- flood ---------------------------------------------------------------------------------


class Flood:
    """Junk at ``rate`` datagrams/s to every manager: random bytes, bad signatures,
    oversized datagrams and replays of captured heartbeats, from its own thread."""

    def __init__(self, run: Run, rate: float) -> None:
        self.run = run
        self.rate = rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True, name="chaos-flood")

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _junk(self, rng: random.Random) -> Iterator[tuple[bytes, tuple[str, int] | None]]:
        """Junk, and where it must go (None: any manager)."""
        beater = self.run.beater
        assert beater is not None
        captured = [(i, d) for i, q in list(beater.captured.items()) for d in list(q)]
        key_id = self.run.d.master.id
        while True:
            kind = rng.randrange(4)
            if kind == 0:
                yield rng.randbytes(rng.randrange(1, 200)), None
            elif kind == 1:  # well formed, signed with a key no manager has
                yield (
                    envelope.seal(key_id, rng.randbytes(16), rng.randbytes(300), rng.randbytes(32)),
                    None,
                )
            elif kind == 2:
                yield b"\x00" * 60000, None
            elif captured:  # a replay, to the manager that saw it (see Beater)
                index, d = rng.choice(captured)
                yield d, beater.route_of(index, d)
            else:
                yield rng.randbytes(64), None

    def _send(self) -> None:
        rng = random.Random(self.run.params.seed)
        targets = [m.address for m in self.run.d.managers]
        junk = self._junk(rng)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            start = time.monotonic()
            while not self._stop.is_set():
                for _ in range(50):
                    datagram, target = next(junk)
                    with contextlib.suppress(OSError):
                        sock.sendto(datagram, target or targets[self.sent % len(targets)])
                    self.sent += 1
                ahead = start + self.sent / self.rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)


def flood(run: Run) -> Result:
    """A flood of junk while the fleet beats: no live amphora may look dead, nothing
    false accepted, memory bounded."""
    n = run.params.size(20, 200)
    fleet = run.fleet_up(n)
    honest_before = fleet.counts.honest
    rate = float(run.params.size(3000, 20000)) if run.params.amphorae is None else 3000.0
    began = run.event(f"flood {rate:g}/s")
    with Flood(run, rate) as f:
        run.sleep(run.params.span(_bound(run), 6 * run.t.heartbeat_timeout))
    ended = run.event("flood ends")
    run.clean()
    run.wait_clean_landed()
    stale = run.timeline.max("stale", began, ended)
    run.figures.update(flood_sent=f.sent, flood_rate=rate)
    honest = fleet.counts.honest - honest_before
    return run.verdict(
        _accepted_within(run, honest + 2 * n),
        inv.simple(
            "no live amphora stale in the flood",
            stale == 0,
            f"{stale:g} stale at most",
            "0",
            "honest heartbeats were crowded out",
        ),
    )


# -- database outages ----------------------------------------------------------------------


@contextlib.contextmanager
def _sqlite_locked(url: str) -> Iterator[None]:
    """Another process's view of an outage: BEGIN EXCLUSIVE held on the file."""
    path = make_url(url).database
    if not path:
        raise ScenarioError("db-outage on SQLite needs a database file")
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


def db_outage(run: Run) -> Result:
    """The database stops answering every manager (a blackhole on the TCP relay; on SQLite
    an exclusive lock), longer than heartbeat_timeout; an amphora dies meanwhile."""
    n = run.params.size(20, 200)
    run.fleet_up(n)
    outage = run.params.span(
        run.t.heartbeat_timeout + 2 * run.interval, 3 * run.t.heartbeat_timeout
    )
    if run.d.dialect == "sqlite":
        cut: contextlib.AbstractContextManager[None] = _sqlite_locked(run.d.db_url)
    else:
        cut = _blackholed([m for m in run.d.managers if m.db_relay])
    with cut:
        run.event("database out")
        run.sleep(run.interval)
        run.kill([0], "amphora dies")
        run.sleep(outage - run.interval)
    run.event("database back")
    run.clean()
    run.wait_clean_landed()
    failures = run.metric_delta("healthmgr_flush_failures_total")
    run.figures.update(outage_s=outage, flush_failures=failures)
    return run.verdict()


@contextlib.contextmanager
def _blackholed(managers: list) -> Iterator[None]:  # type: ignore[type-arg]
    if not managers:
        raise ScenarioError("no manager has a database relay to cut")
    for m in managers:
        m.db_relay.blackhole()
    try:
        yield
    finally:
        for m in managers:
            m.db_relay.passthrough()


def manager_cut_off(run: Run) -> Result:
    """One manager loses its database (its relay blackholed) while the others keep theirs;
    the amphorae keep beating to all of them; one dies meanwhile."""
    n = run.params.size(20, 200)
    run.fleet_up(n)
    cut = run.params.span(_bound(run) + run.interval, 5 * run.t.heartbeat_timeout)
    with _blackholed([run.d.managers[0]]):
        run.event(f"{run.d.managers[0].name} cut off")
        run.sleep(run.interval)
        run.kill([0], "amphora dies")
        run.sleep(cut)
    run.event("reconnected")
    run.clean()
    run.wait_clean_landed()
    return run.verdict()


# -- manager processes ---------------------------------------------------------------------


def _manager_signal(sig: signal.Signals) -> Scenario:
    def scenario(run: Run) -> Result:
        n = run.params.size(40, 400)
        run.fleet_up(n)
        victim = run.d.managers[0]
        # Two neighbours: their last heartbeats went to different managers (round robin),
        # so with several managers one of them was last observed by the victim.
        dead = list(range(_killable(run, n, 2)))
        run.kill(dead, "amphorae die")
        # The signal while they are silent, before they are stale: the victim dies with
        # their silence unjudged (and, with several managers, as the last observer of one).
        run.sleep(run.t.heartbeat_timeout / 2)
        observers = run.snapshot([run.ids[i] for i in dead])["observer"]
        run.figures["dead_observed_by"] = sorted(observers.values())
        run.event(f"{sig.name} {victim.name}")
        victim.send_signal(sig)
        code = victim.wait_exit()
        checks = []
        if victim.started_here:
            expected = 0 if sig is signal.SIGTERM else -signal.SIGKILL
            checks.append(
                inv.simple(
                    f"exit status after {sig.name}", code == expected, str(code), str(expected)
                )
            )
            if sig is signal.SIGTERM:
                lost = victim.events("pending writes lost at shutdown")
                checks.append(
                    inv.simple("nothing lost at shutdown", not lost, f"{len(lost)} loss lines", "0")
                )
            run.sleep(2 * run.interval)
            victim.start()
            run.event(f"{victim.name} restarted")
        run.clean()
        run.wait_clean_landed()
        run.figures["exit_status"] = code
        result = run.verdict(*checks)
        dead_ids = [run.ids[i] for i in dead]
        run.figures["dead_reasons"] = sorted(
            r.reason for reqs in run.requests(dead_ids).values() for r in inv.effective(reqs)
        )
        return result

    return scenario


def several_managers(run: Run) -> Result:
    """Amphorae die with several managers sharing the database: each is failed over
    exactly once, by one of them."""
    n = run.params.size(60, 600)  # a breaker threshold (10 %) that lets 3 die at once
    run.fleet_up(n)
    k = _killable(run, n, run.params.size(3, 30))
    run.kill(range(k), f"{k} amphorae die")
    run.clean()
    run.wait_clean_landed()
    result = run.verdict()  # waits for the dead ones' requests
    by = Counter(r.requested_by for reqs in run.requests().values() for r in reqs)
    run.figures["requests_by_manager"] = dict(by)
    return result


# -- mass outages --------------------------------------------------------------------------


def _statuses(run: Run, indexes: list[int]) -> list[str]:
    amp = models.Amphora
    ids = [run.ids[i] for i in indexes]
    with run.d.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(amp.c.id, amp.c.status).where(amp.c.id.in_(ids))).all())
    return [rows.get(a, "") for a in ids]


def _mass_outage(gradual: bool) -> Scenario:
    def scenario(run: Run) -> Result:
        n = run.params.size(20, 200)
        run.fleet_up(n)
        t = run.t
        threshold = _threshold(run, n)
        if threshold is None:
            raise ScenarioError("mass outages need the circuit breaker (failover_threshold)")
        k = max(threshold, n // 2)
        down = list(range(k))
        if gradual:  # spread over a whole heartbeat_timeout
            run.event(f"{k} die over {t.heartbeat_timeout:g} s")
            for i in down:
                run.kill([i])
                run.sleep(t.heartbeat_timeout / k)
        else:
            run.kill(down, f"{k} die at once")
        all_stopped = run.within(
            lambda: _statuses(run, down).count(C.FAILOVER_STOPPED) == k,
            timeout=3 * _bound(run) + 10,
        )
        stopped_now = _statuses(run, down).count(C.FAILOVER_STOPPED)
        run.event("all FAILOVER_STOPPED" if all_stopped else "not all stopped")
        run.sleep(2 * run.interval)  # held a while: stopped, not failed over
        if gradual:
            run.event("they come back one by one")
            for i in down:
                run.revive([i])
                run.sleep(2 * run.interval / k)
        else:
            run.revive(down, "they come back")
        back = run.within(
            lambda: _statuses(run, down).count(C.ALLOCATED) == k, timeout=3 * _bound(run) + 10
        )
        allocated = _statuses(run, down).count(C.ALLOCATED)
        closed = run.within(
            lambda: run.timeline.samples and run.timeline.samples[-1].breaker_open == 0,
            timeout=6 * t.heartbeat_timeout + 10,
        )
        run.event("breaker closed" if closed else "breaker still open")
        run.clean()
        run.wait_clean_landed()
        stopped = run.metric_delta("healthmgr_failovers_total", outcome="stopped_by_breaker")
        opened = run.timeline.max("breaker_open")
        run.figures.update(outage=k, threshold=threshold, stopped_by_breaker=stopped)
        return run.verdict(
            inv.simple("breaker opened", opened >= 1, f"{opened:g} managers", ">= 1"),
            inv.simple(
                "every silent one FAILOVER_STOPPED", all_stopped, f"{stopped_now} of {k}", f"= {k}"
            ),
            inv.simple("all back to ALLOCATED", back, f"{allocated} of {k}", f"= {k}"),
            inv.simple(
                "breaker closed after the recovery",
                closed,
                "closed" if closed else "open",
                "closed",
            ),
            dead_in_time=False,
        )

    return scenario


# -- a flapping member ---------------------------------------------------------------------


def flapping(run: Run) -> Result:
    """A member flaps UP/DOWN every heartbeat while heartbeats reach several managers out
    of order: the database ends at the newest report, never an older one."""
    n = run.params.size(10, 100)
    i = run.interval
    faults = UdpFaults(reorder=0.3, reorder_delay=1.5 * i, jitter=min(0.2, i / 2))
    flappers = list(range(run.params.size(2, 10)))
    relays = run.udp_relays()
    fleet = run.fleet_up(n, routes=[r.address for r in relays])
    assert run.beater is not None
    members = {x: fleet.topology.amphorae[x].listeners[0].pools[0].members[0] for x in flappers}

    def flap(round_: int) -> list[tuple[int, bytes]]:
        state = MemberState.DOWN if round_ % 2 else MemberState.UP
        for x in flappers:
            run.set_member(x, members[x], state)
        return []

    with run.beater.lock:
        run.beater.hooks.append(flap)
    for r in relays:
        r.set(faults)
    run.event("flapping, reordered")
    run.sleep(run.params.span(2 * run.t.heartbeat_timeout, 15 * run.t.heartbeat_timeout))
    for r in relays:
        r.set(UdpFaults())
    run.relays_drained(relays)
    run.clean()
    run.wait_clean_landed()
    result = run.verdict()
    with run.beater.lock:
        run.beater.hooks.remove(flap)
    run.figures["relay"] = relay_counts(relays)
    return result


# -- a poisoned amphora --------------------------------------------------------------------


def poison(run: Run) -> Result:
    """Two amphorae send counters no database column holds (2**64-1, 2**63): their
    statistics are refused and counted, everything else lands, nothing is failed over
    for it; an amphora that dies meanwhile is still failed over."""
    n = run.params.size(10, 100)
    fleet = run.fleet_up(n)
    assert run.beater is not None
    with run.beater.lock:
        fleet.poison.update({0: 2**64 - 1, 1: 2**63})
        run.excluded.update({0, 1})
    run.event("extreme counters")
    run.kill([2], "amphora dies")
    run.sleep(_bound(run))  # poisoned heartbeats keep coming meanwhile
    run.clean()
    run.wait_clean_landed()
    return run.verdict()


SCENARIOS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            "lossy",
            "loss 10 %, duplication 10 %, reordering 10 %, delay, corruption 2 %; amphorae die",
            lossy,
        ),
        Spec(
            "replay-forgery",
            "forged (20 %) and replayed (20 %) heartbeats; a dead amphora's "
            "captured heartbeats replayed",
            replay_forgery,
        ),
        Spec("flood", "junk datagrams at thousands per second beside an honest fleet", flood),
        Spec(
            "db-outage",
            "every manager loses the database for longer than heartbeat_timeout "
            "(TCP relay blackholed; SQLite: locked); an amphora dies meanwhile",
            db_outage,
            db_relay=True,
        ),
        Spec(
            "manager-cut-off",
            "one manager loses the database, the others keep it; an amphora dies meanwhile",
            manager_cut_off,
            managers=2,
            server_db=True,
            db_relay=True,
        ),
        Spec(
            "manager-sigterm",
            "SIGTERM to a manager while an amphora is being judged; "
            "restarted when the tool started it",
            _manager_signal(signal.SIGTERM),
            signals=True,
        ),
        Spec(
            "manager-sigkill",
            "SIGKILL to a manager while an amphora is being judged; "
            "restarted when the tool started it",
            _manager_signal(signal.SIGKILL),
            signals=True,
        ),
        Spec(
            "several-managers",
            "amphorae die with several managers on one database: each failed over once, by one",
            several_managers,
            managers=2,
            server_db=True,
        ),
        Spec(
            "mass-outage-sudden",
            "half the fleet goes silent at once, then comes back",
            _mass_outage(gradual=False),
        ),
        Spec(
            "mass-outage-gradual",
            "half the fleet goes silent over heartbeat_timeout, then comes back one by one",
            _mass_outage(gradual=True),
        ),
        Spec(
            "flapping",
            "members flap UP/DOWN every heartbeat, reordered, across several managers",
            flapping,
            managers=2,
            server_db=True,
        ),
        Spec("poison", "amphorae send counters beyond any column (2**64-1, 2**63)", poison),
        Spec(
            "partition",
            "a real amphora (HAProxy, amphora-agent) in a network namespace: its "
            "link cut until it is failed over, then healed",
            partition,
            root=True,
            haproxy=True,
        ),
        Spec(
            "agents-lossy",
            "real amphora-agents in front of real HAProxy through the UDP chaos "
            "relay (loss, duplication, reordering, delay, corruption); members change state; "
            "one amphora dies",
            agents_lossy,
            haproxy=True,
        ),
    )
}


def run_scenario(spec: Spec, deployment: Deployment, params: Params) -> Result:
    """Run one scenario; its fleet is removed whatever happens."""
    run = Run(deployment, spec.name, params)
    try:
        return spec.run(run)
    finally:
        run.close()


__all__ = ["SCENARIOS", "Spec", "run_scenario"]

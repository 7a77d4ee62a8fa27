"""The scenarios with real parts: real HAProxy and the real ``amphora-agent``.

- ``partition``: an amphora (its HAProxy and agent) in a network namespace
  of its own, joined by a veth pair to this one, where the managers are
  reached (healthmgr/chaos/netns.py); the link is cut until the amphora is
  failed over, then healed. The old amphora beats again: its request stays
  as it was (PENDING for the API's worker with the ``record`` driver), its
  ``busy`` stays set (no second request), and its heartbeats land as any
  amphora's (docs/fault-injection.md says why that is right).
- ``agents-lossy``: real agents send through the UDP chaos relay (loss,
  duplication, reordering, delay, corruption) while their members change
  state in HAProxy and one amphora dies: no false failover, the dead one
  failed over once in time, the database's statuses and statistics follow
  what HAProxy reports, every corrupted datagram rejected and counted by
  reason.

Each also runs a small simulated fleet beside the real amphorae, held to the
standard invariants (healthmgr/chaos/invariants.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import sqlalchemy as sa

from healthmgr.chaos import invariants as inv
from healthmgr.chaos.amphora import RealAmphora
from healthmgr.chaos.netns import NamespaceUnavailable, linked_namespace
from healthmgr.chaos.run import Result, Run, ScenarioError, relay_counts
from healthmgr.chaos.udp_relay import UdpFaults
from healthmgr.db import models
from healthmgr.rules import constants as C
from healthmgr.wire.values import MemberState

# A corrupted datagram fails the header or the tag (every byte is signed).
CORRUPTION_REASONS = ("bad_magic", "bad_version", "unknown_key", "bad_signature", "malformed")
MEMBER_CYCLE = (MemberState.DOWN, MemberState.MAINT, MemberState.DRAIN, MemberState.UP)

_req = models.FailoverRequest
_health = models.AmphoraHealth
_amp = models.Amphora
_stats = models.ListenerStatistics


def _renamed(check: inv.Check, invariant: str) -> inv.Check:
    return dataclasses.replace(check, invariant=invariant)


def _follow_timeout(run: Run) -> float:
    """How long the database may take to show what HAProxy reports: the agent sends a
    change at once and every interval; a lost heartbeat is made good by the next."""
    return 4 * run.interval + 2.0


def _differences(run: Run, amps: Sequence[RealAmphora]) -> list[str]:
    want = {a.id: inv.expected_statuses(a.topo, *a.reported()) for a in amps}
    got = run.statuses([a.topo for a in amps])
    return [
        f"{amp}: {obj} {got.get(amp, {}).get(obj)} != {status}"
        for amp, objs in want.items()
        for obj, status in objs.items()
        if got.get(amp, {}).get(obj) != status
    ]


def statuses_follow(
    run: Run, amps: Sequence[RealAmphora], label: str, since: float | None = None
) -> inv.Check:
    """Once HAProxy's states are settled, the database shows them within the timeout;
    the figure: how long after ``since`` (monotonic: the change, the faults' end)."""
    began = time.monotonic() if since is None else since
    last: list[str] = []

    def same() -> bool:
        if not all(a.settled() for a in amps):
            return False
        last[:] = _differences(run, amps)
        return not last

    ok = run.within(same, _follow_timeout(run))
    took = time.monotonic() - began
    return inv.simple(
        label,
        ok,
        f"{len(amps)} amphorae, by {took:.2f} s",
        f"<= {_follow_timeout(run):g} s",
        "; ".join(last[:2]),
    )


def _totals(run: Run, amps: Sequence[RealAmphora]) -> dict[str, tuple[int, int, int, int]]:
    with run.d.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                _stats.c.listener_id,
                _stats.c.bytes_in,
                _stats.c.bytes_out,
                _stats.c.total_connections,
                _stats.c.request_errors,
            ).where(_stats.c.amphora_id.in_([a.id for a in amps]))
        ).all()
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}  # type: ignore[misc]


def statistics_follow(run: Run, amps: Sequence[RealAmphora]) -> inv.Check:
    """Every listener's totals in the database equal HAProxy's own counters."""
    last: list[str] = []

    def same() -> bool:
        want = {k: v for a in amps for k, v in a.listener_counters().items()}
        got = _totals(run, amps)
        last[:] = [f"{k}: {got.get(k)} != {v}" for k, v in want.items() if got.get(k) != v]
        return not last

    ok = run.within(same, _follow_timeout(run))
    n = sum(len(a.topo.listeners) for a in amps)
    return inv.simple(
        "statistics = HAProxy's counters",
        ok,
        f"{n - len(last)}/{n} listeners",
        "all",
        "; ".join(last[:2]),
    )


def _request_state(run: Run, amphora: str) -> tuple[tuple[str, ...], bool | None, str | None]:
    """(states of its failover requests, busy, amphora.status)."""
    with run.d.engine.connect() as conn:
        states = tuple(
            conn.execute(
                sa.select(_req.c.state).where(_req.c.amphora_id == amphora).order_by(_req.c.id)
            ).scalars()
        )
        busy = conn.execute(
            sa.select(_health.c.busy).where(_health.c.amphora_id == amphora)
        ).scalar()
        status = conn.execute(sa.select(_amp.c.status).where(_amp.c.id == amphora)).scalar()
    return states, None if busy is None else bool(busy), status


def _last_update(run: Run, amphora: str) -> object:
    with run.d.engine.connect() as conn:
        return conn.execute(
            sa.select(_health.c.last_update).where(_health.c.amphora_id == amphora)
        ).scalar()


def _requested(run: Run, amphora: str) -> bool:
    return bool(inv.effective(run.requests([amphora]).get(amphora, ())))


def _wait_failover(run: Run) -> float:
    t = run.t
    return 3 * run.bound + 4 * t.heartbeat_timeout + 5


# -- partition ---------------------------------------------------------------------------


def partition(run: Run) -> Result:
    """An amphora behind a cut link (network namespace, veth pair), healed after its
    failover was requested."""
    try:
        ns = run.enter(linked_namespace())
    except NamespaceUnavailable as e:
        raise ScenarioError(str(e)) from None
    # The managers listen where they listen; what arrives over the link at the near
    # end is forwarded to them as it is (a relay without faults).
    bridges = run.udp_relays(listen_host=ns.host_ip)
    run.fleet_up(run.params.size(10, 100))
    behind, beside = run.real_up([([b.address for b in bridges], ns), (run.manager_routes(), None)])
    up = statuses_follow(run, [behind, beside], "")
    if not up.passed:
        raise ScenarioError(f"the real amphorae did not come up ONLINE: {up.detail}")
    run.event("link cut")
    ns.cut()
    requested = run.within(lambda: _requested(run, behind.id), _wait_failover(run))
    # Its driver's outcome first (record: PENDING at once; exec: when the command ends).
    run.within(
        lambda: C.FAILOVER_RUNNING not in _request_state(run, behind.id)[0],
        run.t.heartbeat_timeout + 10,
    )
    snap = run.snapshot([behind.id])
    before = _request_state(run, behind.id)
    healed = run.event("link healed")
    ns.heal()
    cut_last = snap["last_update"].get(behind.id)
    beats = run.within(
        lambda: (_last_update(run, behind.id) or cut_last) > cut_last,
        run.t.heartbeat_timeout + 4 * run.interval + 5,
    )
    back_after = run.now() - healed
    # Its news still lands: a member goes DOWN in its HAProxy, for real.
    member = behind.members[-1]
    behind.set_member(member, MemberState.DOWN)
    changed = time.monotonic()
    run.until(
        lambda: behind.reported()[0].get(member) is MemberState.DOWN,
        "HAProxy takes the member DOWN",
        timeout=10,
    )
    run.event("a member of it goes DOWN")
    landed = statuses_follow(run, [behind, beside], "its statuses land again", changed)
    # A second verdict on it would need it stale and not busy: neither, as a check or
    # two while it beats shows.
    run.sleep(run.t.failover_settle + 2 * run.t.health_check_interval)
    after = _request_state(run, behind.id)
    run.clean()
    run.wait_clean_landed()
    states, busy, status = after
    run.figures.update(
        behind=behind.id,
        beside=beside.id,
        requested_before_heal=requested,
        back_after_s=round(back_after, 2),
        before_heal=before,
        after_heal=after,
    )
    checks = [
        _renamed(
            run.failed_over_once([behind.id], snap), "behind the cut: failed over once, in time"
        ),
        _renamed(
            inv.no_false_failovers(run.requests([beside.id]), [beside.id]),
            "real amphora beside it: not failed over",
        ),
        inv.simple(
            "it beats again after the heal",
            beats,
            f"{back_after:.2f} s after" if beats else "never",
            f"<= {run.t.heartbeat_timeout:g} s",
        ),
        inv.simple(
            "its request kept, busy kept, no second",
            after == before and len(states) == 1 and busy is True,
            f"{'/'.join(states)}, busy={busy}, {status}",
            f"= before the heal ({'/'.join(before[0])})",
            f"before the heal {before}, after {after}",
        ),
        landed,
    ]
    return run.verdict(*checks)


# -- real agents through the UDP chaos relay ---------------------------------------------


def agents_lossy(run: Run) -> Result:
    """Real agents (and a small simulated fleet) through lossy, duplicating, reordering,
    delaying, corrupting relays; members change state in HAProxy; one amphora dies."""
    i = run.interval
    faults = UdpFaults.lossy(i, corrupt=0.05)
    relays = run.udp_relays()
    routes = [r.address for r in relays]
    run.fleet_up(run.params.size(10, 100), routes=routes)
    amps = run.real_up([(routes, None)] * run.params.size(3, 6))
    dead, live = amps[0], amps[1:]
    up = statuses_follow(run, amps, "")
    if not up.passed:
        raise ScenarioError(f"the real amphorae did not come up ONLINE: {up.detail}")
    served = sum(a.traffic(3) for a in amps)
    run.baseline()  # the counts of the faults' phase only
    for r in relays:
        r.set(faults)
    run.event("loss, dup, reorder, delay, corrupt")
    dead.kill()
    run.event("a real amphora dies")
    steps = max(1, round(run.params.span(run.bound, 4 * run.bound) / i))
    for step in range(steps):  # members change state in HAProxy, traffic flows
        for k, amp in enumerate(live):
            amp.set_member(amp.members[-1], MEMBER_CYCLE[(step + k) % len(MEMBER_CYCLE)])
            served += amp.traffic(1)
        run.sleep(i)
    for r in relays:
        r.set(UdpFaults())
    faults_off = time.monotonic()
    run.relays_drained(relays)
    run.clean()
    run.wait_clean_landed()
    counts = relay_counts(relays)
    run.within(lambda: _requested(run, dead.id), _wait_failover(run))
    rejected = {
        r: run.metric_delta("healthmgr_heartbeats_total", result=r) for r in CORRUPTION_REASONS
    }
    run.figures.update(
        relay=counts, served=served, rejected={r: v for r, v in rejected.items() if v}
    )
    checks = [
        _renamed(
            inv.no_false_failovers(run.requests([a.id for a in live]), [a.id for a in live]),
            "0 false failovers (real)",
        ),
        _renamed(run.failed_over_once([dead.id]), "dead real amphora failed over once, in time"),
        statuses_follow(run, live, "statuses follow HAProxy", faults_off),
        statistics_follow(run, live),
        _corrupted_rejected(rejected, counts["corrupted"]),
    ]
    return run.verdict(*checks)


def _corrupted_rejected(rejected: dict[str, float | None], corrupted: int) -> inv.Check:
    name = "every corrupted datagram rejected, by reason"
    if any(v is None for v in rejected.values()):
        return inv.Check(name, None, "no metrics", f"= {corrupted}")
    total = sum(v or 0 for v in rejected.values())
    by = ", ".join(f"{v:g} {r}" for r, v in rejected.items() if v) or "none"
    return inv.simple(
        name,
        total == corrupted,
        by,
        f"= {corrupted} corrupted",
        f"{total:g} rejected for corruption, {corrupted} corrupted by the relays",
    )


__all__ = ["agents_lossy", "partition", "statistics_follow", "statuses_follow"]

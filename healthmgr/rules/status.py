"""Octavia's status rules as one pure function.

``evaluate(topology, heartbeat)`` returns every operating status the
heartbeat determines, which of them change against the topology, whether the
heartbeat counts as healthy for ``amphora_health`` (the listener-count rule),
and whether it names objects the topology does not have (the caller refreshes
its cache then). ``apply`` folds an outcome back into the topology, so a cache
can stay current without reading the database. ``digest`` gives a stable
fingerprint of the determined statuses: with several managers, the database
is compared against it rather than against one manager's cache.

The rules, their ids (R1..R28) and where they differ from Octavia are in
``docs/status-rules.md``; the comments below cite those ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from healthmgr.rules import constants as c
from healthmgr.rules.batch import StatusWrite
from healthmgr.rules.topology import (
    AmphoraTopology,
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
)
from healthmgr.wire.ids import Id
from healthmgr.wire.values import Heartbeat, ListenerState, MemberState, PoolState

Changes = tuple[tuple[Id, str], ...]
S = TypeVar("S", ListenerState, PoolState, MemberState)
T = TypeVar("T", ListenerTopology, PoolTopology, MemberTopology)


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """What one heartbeat means for one load balancer.

    ``listeners``, ``pools`` and ``members`` hold only objects whose
    ``operating_status`` changes, in topology order. ``determined`` holds
    every status the heartbeat decides, changed or not (objects the rules
    leave unchanged, R3, R8, R17's NO_MONITOR, R18, are not in it): what the
    database must show after this heartbeat, whatever it showed before.
    """

    load_balancer_id: Id | None = None
    load_balancer: str | None = None  # new status, None when unchanged
    listeners: Changes = ()
    pools: Changes = ()
    members: Changes = ()
    healthy: bool = False  # refresh amphora_health.last_update (R23, R24)
    names_unknown_objects: bool = False  # refresh the topology (R25)
    determined: tuple[StatusWrite, ...] = dataclasses.field(default=(), compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.load_balancer or self.listeners or self.pools or self.members)

    def writes(self) -> tuple[StatusWrite, ...]:
        """The status changes as rows for the batched writer."""
        out: list[StatusWrite] = []
        if self.load_balancer is not None and self.load_balancer_id is not None:
            out.append(StatusWrite("load_balancer", self.load_balancer_id, self.load_balancer))
        for table, changes in (
            ("listener", self.listeners),
            ("pool", self.pools),
            ("member", self.members),
        ):
            out.extend(StatusWrite(table, obj_id, status) for obj_id, status in changes)
        return tuple(out)


# --- mapping HAProxy states to operating statuses ---------------------------

_LISTENER_STATUS = {ListenerState.OPEN: c.ONLINE, ListenerState.FULL: c.DEGRADED}  # R1-R3
_POOL_STATUS = {PoolState.UP: c.ONLINE, PoolState.DOWN: c.ERROR}  # R6-R8
_MEMBER_STATUS = {  # R12-R16, R18 (OTHER is absent: unchanged)
    MemberState.UP: c.ONLINE,
    MemberState.DOWN: c.ERROR,
    MemberState.DRAIN: c.DRAINING,
    MemberState.MAINT: c.OFFLINE,
    MemberState.NO_CHECK: c.NO_MONITOR,
}

# When one object is reported more than once (a pool shared by two listeners
# is two HAProxy backends, R11), the report with the highest rank wins: the
# worst news, and anything beats "could not map it".
_LISTENER_RANK = {
    ListenerState.OTHER: 0,
    ListenerState.STOP: 1,
    ListenerState.OPEN: 2,
    ListenerState.FULL: 3,
}
_POOL_RANK = {PoolState.OTHER: 0, PoolState.UP: 1, PoolState.DOWN: 2}
_MEMBER_RANK = {
    MemberState.OTHER: 0,
    MemberState.UP: 1,
    MemberState.NO_CHECK: 2,
    MemberState.DRAIN: 3,
    MemberState.MAINT: 4,
    MemberState.DOWN: 5,
}


def _worse(rank: dict[S, int], old: S | None, new: S) -> S:
    return new if old is None or rank[new] > rank[old] else old


# --- the heartbeat, indexed --------------------------------------------------


@dataclass(slots=True)
class _PoolSeen:
    state: PoolState
    members: dict[Id, MemberState]


def _index_listeners(hb: Heartbeat) -> dict[Id, ListenerState]:
    seen: dict[Id, ListenerState] = {}
    for report in hb.listeners:
        seen[report.id] = _worse(_LISTENER_RANK, seen.get(report.id), report.status)
    return seen


def _index_pools(hb: Heartbeat) -> dict[Id, _PoolSeen]:
    """Pool reports combined per pool id (R11): worst state wins, per member too."""
    seen: dict[Id, _PoolSeen] = {}
    for report in hb.pools:
        entry = seen.get(report.id)
        if entry is None:
            entry = seen[report.id] = _PoolSeen(report.status, {})
        else:
            entry.state = _worse(_POOL_RANK, entry.state, report.status)
        for member in report.members:
            entry.members[member.id] = _worse(
                _MEMBER_RANK, entry.members.get(member.id), member.status
            )
    return seen


# --- the rules ---------------------------------------------------------------


def _is_pending(lb: LoadBalancerTopology) -> bool:
    return lb.provisioning_status in c.PENDING_STATUSES


def is_healthy(lb: LoadBalancerTopology, hb: Heartbeat) -> bool:
    """The listener-count rule (R23, R24)."""
    if _is_pending(lb) or not lb.enabled:
        return True
    reported = len({report.id for report in hb.listeners})
    return reported == sum(1 for listener in lb.listeners if listener.enabled)


def _missing_listener_status(lb: LoadBalancerTopology, listener: ListenerTopology) -> str:
    # R4/R5. Octavia does not look at lb.enabled here; we do (see the docs).
    if listener.enabled and lb.enabled and lb.provisioning_status == c.ACTIVE:
        return c.ERROR
    return c.OFFLINE


def evaluate(lb: LoadBalancerTopology, hb: Heartbeat) -> StatusOutcome:
    """Apply the status rules of one heartbeat to one load balancer's topology."""
    reported_listeners = _index_listeners(hb)
    reported_pools = _index_pools(hb)
    lb_status = c.ONLINE if lb.enabled else c.OFFLINE  # R19
    degraded = False  # R2, R9: only an ONLINE load balancer becomes DEGRADED
    failed = False  # R7, R20

    determined: list[StatusWrite] = []
    listener_changes: list[tuple[Id, str]] = []
    known_listeners: set[Id] = set()
    for listener in lb.listeners:
        known_listeners.add(listener.id)
        state = reported_listeners.get(listener.id)
        if state is None:
            new = _missing_listener_status(lb, listener)  # R4, R5, R21
        else:
            new = _LISTENER_STATUS.get(state)
            degraded |= state is ListenerState.FULL
        _decide(determined, listener_changes, "listener", listener, new)

    pool_changes: list[tuple[Id, str]] = []
    member_decided: list[StatusWrite] = []
    member_changes: list[tuple[Id, str]] = []
    unknown = not known_listeners.issuperset(reported_listeners)
    for pool in lb.pools:
        seen = reported_pools.get(pool.id)
        if seen is None:
            _decide(determined, pool_changes, "pool", pool, c.OFFLINE)  # R10: members keep theirs
            continue
        new, member_down, names_unknown = _evaluate_pool(pool, seen, member_decided, member_changes)
        unknown |= names_unknown
        failed |= seen.state is PoolState.DOWN
        degraded |= member_down and seen.state is PoolState.UP
        _decide(determined, pool_changes, "pool", pool, new)
    determined.extend(member_decided)

    if failed:
        lb_status = c.ERROR
    elif degraded and lb_status == c.ONLINE:
        lb_status = c.DEGRADED
    determined.insert(0, StatusWrite("load_balancer", lb.id, lb_status))

    known_pools = {pool.id for pool in lb.pools}
    unknown |= not known_pools.issuperset(reported_pools)
    unknown |= any(
        report.listener_id is not None and report.listener_id not in known_listeners
        for report in hb.pools
    )
    return StatusOutcome(
        load_balancer_id=lb.id,
        load_balancer=lb_status if lb_status != lb.operating_status else None,
        listeners=tuple(listener_changes),
        pools=tuple(pool_changes),
        members=tuple(member_changes),
        healthy=is_healthy(lb, hb),
        names_unknown_objects=unknown,
        determined=tuple(determined),
    )


def _decide(
    determined: list[StatusWrite],
    changes: list[tuple[Id, str]],
    table: str,
    obj: ListenerTopology | PoolTopology | MemberTopology,
    new: str | None,
) -> None:
    """Record a status the rules decided (None: left unchanged), and whether it changes."""
    if new is None:
        return
    determined.append(StatusWrite(table, obj.id, new))
    if new != obj.operating_status:
        changes.append((obj.id, new))


def _evaluate_pool(
    pool: PoolTopology,
    seen: _PoolSeen,
    member_decided: list[StatusWrite],
    member_changes: list[tuple[Id, str]],
) -> tuple[str | None, bool, bool]:
    """One reported pool: (its new status, a member is DOWN, names unknown members)."""
    new = _POOL_STATUS.get(seen.state)
    member_down = False
    for member in pool.members:
        state = seen.members.get(member.id)
        if state is None:
            # R17: a member HAProxy does not know is OFFLINE, except one without
            # a health monitor, which HAProxy may leave out.
            member_new = None if member.operating_status == c.NO_MONITOR else c.OFFLINE
        else:
            member_new = _MEMBER_STATUS.get(state)
            member_down |= state is MemberState.DOWN
        _decide(member_decided, member_changes, "member", member, member_new)
    if member_down and new == c.ONLINE:
        new = c.DEGRADED  # R9
    names_unknown = len(seen.members) > 0 and not {m.id for m in pool.members}.issuperset(
        seen.members
    )
    return new, member_down, names_unknown


# --- outside the load balancer ----------------------------------------------


def evaluate_amphora(amphora: AmphoraTopology | None, hb: Heartbeat) -> StatusOutcome:
    """The rules for a heartbeat whose amphora may not be in the database.

    ``None`` (unknown amphora, R26) and a deleted amphora or load balancer:
    nothing is written and the heartbeat is not healthy (a forgotten amphora
    must not look alive). An amphora without a load balancer (R27): nothing
    is written; healthy when it reports no listeners, as Octavia expects 0.
    """
    if amphora is None:
        return StatusOutcome()
    if amphora.id != hb.amphora_id:
        raise ValueError(
            f"heartbeat of amphora {hb.amphora_id.hex()} evaluated against the "
            f"topology of amphora {amphora.id.hex()}"
        )
    lb = amphora.load_balancer
    if amphora.status == c.DELETED or (lb is not None and lb.provisioning_status == c.DELETED):
        return StatusOutcome()
    if lb is None:
        return StatusOutcome(healthy=not hb.listeners)
    return evaluate(lb, hb)


def digest(determined: Iterable[StatusWrite]) -> int:
    """A stable signed 64-bit fingerprint of determined statuses (order-independent).

    The same in every manager process (unlike ``hash``), so managers compare
    what the database shows against it.
    """
    h = hashlib.blake2b(digest_size=8)
    for w in sorted(determined, key=lambda w: (w.table, w.id)):
        h.update(w.table.encode())
        h.update(w.id)
        h.update(w.operating_status.encode())
    return int.from_bytes(h.digest(), "big", signed=True)


# --- folding an outcome back into the topology ------------------------------


def _replace_status(objs: Iterable[T], changes: dict[Id, str]) -> tuple[T, ...]:
    return tuple(
        dataclasses.replace(obj, operating_status=changes[obj.id]) if obj.id in changes else obj
        for obj in objs
    )


def apply(lb: LoadBalancerTopology, outcome: StatusOutcome) -> LoadBalancerTopology:
    """The topology after the outcome's status changes were written."""
    if outcome.load_balancer_id is not None and outcome.load_balancer_id != lb.id:
        raise ValueError(
            f"outcome for load balancer {outcome.load_balancer_id.hex()} applied to "
            f"load balancer {lb.id.hex()}"
        )
    if not outcome.changed:
        return lb
    members = dict(outcome.members)
    pool_changes = dict(outcome.pools)
    pools = tuple(
        dataclasses.replace(
            pool,
            operating_status=pool_changes.get(pool.id, pool.operating_status),
            members=_replace_status(pool.members, members) if members else pool.members,
        )
        for pool in lb.pools
    )
    return dataclasses.replace(
        lb,
        operating_status=outcome.load_balancer or lb.operating_status,
        listeners=_replace_status(lb.listeners, dict(outcome.listeners)),
        pools=pools,
    )

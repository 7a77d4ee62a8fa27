"""HAProxy stats -> heartbeat value. Pure: no I/O, no clock (the caller passes ``now``).

Naming contract with the API's HAProxy configuration (Octavia's):

* a listener is a frontend named by the listener's UUID;
* a pool is a backend named ``<pool_uuid>:<listener_uuid>``;
* a member is a server (in that backend) named by the member's UUID.

Proxies and servers whose names do not follow it (a ``stats`` frontend, a
hand-written backend) are not ours and are left out of the heartbeat.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from agent.haproxy import Info, RowType, Snapshot, StatRow
from healthmgr.wire.haproxy_status import (
    listener_state_from_haproxy,
    member_state_from_haproxy,
    pool_state_from_haproxy,
)
from healthmgr.wire.ids import Id, id_bytes
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    PoolReport,
    PoolState,
)

# counters_epoch = start_time_sec << PID_BITS | pid. Linux pid_max is at most
# 2**22, so the pid fits; the start time keeps epochs increasing across restarts.
PID_BITS = 22
PID_MASK = (1 << PID_BITS) - 1
# Slack when the start time is derived from Uptime_sec (read at another instant).
_UPTIME_JITTER_SEC = 2


class ReportError(Exception):
    """The HAProxy reading cannot make a heartbeat (said why)."""


@functools.lru_cache(maxsize=16384)
def uuid_id(name: str) -> Id | None:
    """16-byte id of a canonical UUID name, None for any other name.

    Canonical only (``id_bytes``): HAProxy names are compared as strings, so a
    braced or dash-less spelling would be a different (foreign) name. Cached:
    the same names come back at every poll (a large amphora has a few
    thousand), and parsing them was a fifth of a poll's cost.
    """
    try:
        return id_bytes(name)
    except ValueError:
        return None


def counters_epoch(info: Info, *, now: float, previous: int | None = None) -> int:
    """A number that changes whenever HAProxy's counters restart from zero.

    Counters live in a HAProxy (worker) process: a restart or a reload starts a
    new process with a new Pid and a new start time. The epoch packs both:
    ``start_time_sec << 22 | pid``, so it also increases from one process to
    the next (the start time does). HAProxy >= 2.5 prints ``Start_time_sec``;
    older ones only ``Uptime_sec``, from which the start is derived as
    ``now - uptime`` - that wobbles by a second between readings, so a
    ``previous`` epoch with the same pid and a start within 2 s is kept.

    Not covered: ``clear counters`` on the stats socket zeroes counters inside
    the same process; the manager sees the counters go down within one epoch.
    """
    pid = info.pid & PID_MASK
    if info.start_time_sec is not None:
        return (info.start_time_sec << PID_BITS) | pid
    if info.uptime_sec is None:
        raise ReportError("show info has neither Start_time_sec nor Uptime_sec")
    start = max(0, int(now) - info.uptime_sec)
    if (
        previous is not None
        and previous & PID_MASK == pid
        and abs((previous >> PID_BITS) - start) <= _UPTIME_JITTER_SEC
    ):
        return previous
    return (start << PID_BITS) | pid


def _listener(row: StatRow, listener_id: Id) -> ListenerReport:
    return ListenerReport(
        id=listener_id,
        status=listener_state_from_haproxy(row.status),
        current_connections=max(0, row.scur),
        bytes_in=max(0, row.bin),
        bytes_out=max(0, row.bout),
        total_connections=max(0, row.stot),
        request_errors=max(0, row.ereq),
    )


def _pool_ids(pxname: str) -> tuple[Id, Id] | None:
    pool, sep, listener = pxname.partition(":")
    if not sep:
        return None
    pool_id, listener_id = uuid_id(pool), uuid_id(listener)
    if pool_id is None or listener_id is None:
        return None
    return pool_id, listener_id


def reports(rows: Iterable[StatRow]) -> tuple[tuple[ListenerReport, ...], tuple[PoolReport, ...]]:
    """Listeners and pools (with their members) from ``show stat`` rows, in HAProxy's order."""
    listeners: list[ListenerReport] = []
    backends: dict[str, StatRow] = {}
    members: dict[str, list[MemberReport]] = {}
    for row in rows:
        if row.type is RowType.FRONTEND:
            listener_id = uuid_id(row.pxname)
            if listener_id is not None:
                listeners.append(_listener(row, listener_id))
        elif row.type is RowType.BACKEND:
            backends[row.pxname] = row
        elif row.type is RowType.SERVER:
            member_id = uuid_id(row.svname)
            if member_id is not None:
                state = member_state_from_haproxy(row.status, row.weight)
                members.setdefault(row.pxname, []).append(MemberReport(member_id, state))
    pools = []
    for pxname, row in backends.items():
        ids = _pool_ids(pxname)
        if ids is None:
            continue
        pools.append(
            PoolReport(
                id=ids[0],
                listener_id=ids[1],
                status=pool_state_from_haproxy(row.status),
                members=tuple(members.get(pxname, ())),
            )
        )
    return tuple(listeners), tuple(pools)


Summary = tuple[
    tuple[tuple[Id, ListenerState], ...],
    tuple[tuple[Id, Id, PoolState, tuple[MemberReport, ...]], ...],
]


def summary(listeners: Iterable[ListenerReport], pools: Iterable[PoolReport]) -> Summary:
    """What a heartbeat reports, without its counters: a change in it is news to send at once.

    Listener, pool and member statuses, and which of them exist (a listener
    appearing or disappearing; HAProxy gone reports none at all).
    """
    return (
        tuple((li.id, li.status) for li in listeners),
        tuple((p.id, p.listener_id, p.status, p.members) for p in pools),
    )


def build_heartbeat(
    snapshot: Snapshot,
    *,
    amphora_id: Id,
    seq: int,
    sent_at_ms: int,
    interval_ms: int,
    counters_epoch: int,
) -> Heartbeat:
    """The heartbeat value for one HAProxy reading (absolute counters)."""
    listeners, pools = reports(snapshot.rows)
    return Heartbeat(
        amphora_id=amphora_id,
        seq=seq,
        sent_at_ms=sent_at_ms,
        interval_ms=interval_ms,
        counters_epoch=counters_epoch,
        listeners=listeners,
        pools=pools,
    )

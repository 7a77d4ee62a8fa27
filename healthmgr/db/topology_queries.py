"""Load topologies for many amphorae in a few queries.

Four queries per chunk of ids, whatever the count: amphorae with their load
balancers, then the listeners, pools and members of those load balancers.
Objects whose provisioning status is DELETED are left out (an amphora whose
load balancer is DELETED gets ``load_balancer=None``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from typing import TypeVar

import sqlalchemy as sa

from healthmgr import constants as C
from healthmgr.db.models import Amphora, Listener, LoadBalancer, Member, Pool
from healthmgr.topology import (
    AmphoraTopology,
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
)
from healthmgr.wire.values import Id, id_str

IN_CHUNK = 1000  # ids per IN list: well under every driver's parameter limit

_amp = Amphora.__table__
_lb = LoadBalancer.__table__
_listener = Listener.__table__
_pool = Pool.__table__
_member = Member.__table__

T = TypeVar("T")


def chunks(items: Sequence[T], size: int | None = None) -> Iterator[Sequence[T]]:
    size = size or IN_CHUNK
    for start in range(0, len(items), size):
        yield items[start : start + size]


def id_bytes(text: str) -> Id:
    """``wire.values.id_bytes`` for canonical UUID text, without uuid.UUID (faster)."""
    return bytes.fromhex(text.replace("-", ""))


def _opt_id(text: str | None) -> Id | None:
    return None if text is None else id_bytes(text)


def load_amphorae(conn: sa.Connection, amphora_ids: Collection[Id]) -> dict[Id, AmphoraTopology]:
    wanted = sorted({id_str(i) for i in amphora_ids})
    out: dict[Id, AmphoraTopology] = {}
    for part in chunks(wanted):
        # Amphorae and their (live) load balancers in one query.
        rows = conn.execute(
            sa.select(
                _amp.c.id,
                _amp.c.status,
                _amp.c.role,
                _lb.c.id.label("lb_id"),
                _lb.c.enabled,
                _lb.c.provisioning_status,
                _lb.c.operating_status,
            )
            .select_from(
                _amp.outerjoin(
                    _lb,
                    sa.and_(
                        _lb.c.id == _amp.c.load_balancer_id,
                        _lb.c.provisioning_status != C.DELETED,
                    ),
                )
            )
            .where(_amp.c.id.in_(part))
            .where(_amp.c.status != C.DELETED)
        ).all()
        lbs = _build_lbs(conn, {r.lb_id: r for r in rows if r.lb_id is not None})
        for r in rows:
            out[id_bytes(r.id)] = AmphoraTopology(
                id=id_bytes(r.id),
                status=r.status,
                role=r.role,
                load_balancer=lbs.get(r.lb_id) if r.lb_id is not None else None,
            )
    return out


def load_load_balancers(
    conn: sa.Connection, lb_ids: Collection[str]
) -> dict[str, LoadBalancerTopology]:
    """Topologies keyed by textual id (the form amphora rows refer to)."""
    out: dict[str, LoadBalancerTopology] = {}
    for part in chunks(sorted(lb_ids)):
        rows = conn.execute(
            sa.select(
                _lb.c.id.label("lb_id"),
                _lb.c.enabled,
                _lb.c.provisioning_status,
                _lb.c.operating_status,
            )
            .where(_lb.c.id.in_(part))
            .where(_lb.c.provisioning_status != C.DELETED)
        ).all()
        out.update(_build_lbs(conn, {r.lb_id: r for r in rows}))
    return out


def _build_lbs(conn: sa.Connection, lb_rows: dict[str, sa.Row]) -> dict[str, LoadBalancerTopology]:
    """Rows carrying lb_id/enabled/statuses -> topologies (3 queries)."""
    if not lb_rows:
        return {}
    live = sorted(lb_rows)
    listeners = _listeners_by_lb(conn, live)
    pools = _pools_by_lb(conn, live)
    return {
        lb_id: LoadBalancerTopology(
            id=id_bytes(lb_id),
            enabled=bool(r.enabled),
            provisioning_status=r.provisioning_status,
            operating_status=r.operating_status,
            listeners=tuple(listeners.get(lb_id, ())),
            pools=tuple(pools.get(lb_id, ())),
        )
        for lb_id, r in lb_rows.items()
    }


def _listeners_by_lb(conn: sa.Connection, lb_ids: Sequence[str]) -> dict[str, list]:
    rows = conn.execute(
        sa.select(
            _listener.c.id,
            _listener.c.load_balancer_id,
            _listener.c.enabled,
            _listener.c.operating_status,
            _listener.c.default_pool_id,
        )
        .where(_listener.c.load_balancer_id.in_(lb_ids))
        .where(_listener.c.provisioning_status != C.DELETED)
        .order_by(_listener.c.id)
    ).all()
    out: dict[str, list[ListenerTopology]] = defaultdict(list)
    for r in rows:
        out[r.load_balancer_id].append(
            ListenerTopology(
                id=id_bytes(r.id),
                enabled=bool(r.enabled),
                operating_status=r.operating_status,
                default_pool_id=_opt_id(r.default_pool_id),
            )
        )
    return out


def _pools_by_lb(conn: sa.Connection, lb_ids: Sequence[str]) -> dict[str, list]:
    pool_rows = conn.execute(
        sa.select(_pool.c.id, _pool.c.load_balancer_id, _pool.c.enabled, _pool.c.operating_status)
        .where(_pool.c.load_balancer_id.in_(lb_ids))
        .where(_pool.c.provisioning_status != C.DELETED)
        .order_by(_pool.c.id)
    ).all()
    member_rows = conn.execute(
        sa.select(_member.c.id, _member.c.pool_id, _member.c.enabled, _member.c.operating_status)
        .join(_pool, _pool.c.id == _member.c.pool_id)
        .where(_pool.c.load_balancer_id.in_(lb_ids))
        .where(_member.c.provisioning_status != C.DELETED)
        .order_by(_member.c.id)
    ).all()
    members: dict[str, list[MemberTopology]] = defaultdict(list)
    for m in member_rows:
        members[m.pool_id].append(
            MemberTopology(
                id=id_bytes(m.id),
                pool_id=id_bytes(m.pool_id),
                enabled=bool(m.enabled),
                operating_status=m.operating_status,
            )
        )
    out: dict[str, list[PoolTopology]] = defaultdict(list)
    for p in pool_rows:
        out[p.load_balancer_id].append(
            PoolTopology(
                id=id_bytes(p.id),
                enabled=bool(p.enabled),
                operating_status=p.operating_status,
                members=tuple(members.get(p.id, ())),
            )
        )
    return out


def amphora_ids_of(conn: sa.Connection, lb_id: Id) -> list[Id]:
    """The live amphorae of one load balancer (for a cache refresh by LB)."""
    rows = conn.execute(
        sa.select(_amp.c.id)
        .where(_amp.c.load_balancer_id == id_str(lb_id))
        .where(_amp.c.status != C.DELETED)
        .order_by(_amp.c.id)
    ).scalars()
    return [id_bytes(r) for r in rows]

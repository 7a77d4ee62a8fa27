"""Load topologies for many amphorae in a few queries.

Four queries per chunk of ids, whatever the count: amphorae with their load
balancers, then the listeners, pools and members of those load balancers.
Objects whose provisioning status is DELETED are left out, except a DELETED
load balancer, which comes without listeners or pools so that the rules can
tell its amphora from a spare one (R27). DELETED amphorae are absent.

A row that cannot be read (an id that is not a UUID, a status outside the
vocabulary) is left out and reported as a :class:`RefusedRow`, never allowed
to fail the load of the other amphorae in its batch.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import replace

import sqlalchemy as sa

from healthmgr.db.in_lists import chunks, one_of
from healthmgr.db.models import Amphora, Listener, LoadBalancer, Member, Pool
from healthmgr.rules import constants as C
from healthmgr.rules.batch import RefusedRow
from healthmgr.rules.topology import (
    AmphoraTopology,
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
)
from healthmgr.wire.ids import Id, id_bytes, id_str

IN_CHUNK = 1000  # ids per IN list: well under every driver's parameter limit
# Octavia's amphorae also pass through PENDING_CREATE/PENDING_UPDATE (its
# lookup table has them; the native schema's CHECK does not).
READABLE_AMPHORA_STATUSES = (*C.AMPHORA_STATUSES, C.PENDING_CREATE, C.PENDING_UPDATE)

_amp = Amphora
_lb = LoadBalancer
_listener = Listener
_pool = Pool
_member = Member


def _opt_id(text: str | None) -> Id | None:
    return None if text is None else id_bytes(text)


def _word(text: str) -> str:
    """A status or role, shared: each row brings its own copy of the same few
    words, and the view keeps them for every tracked amphora (about 120 bytes
    an amphora at 100,000, allocated among the load's transient rows)."""
    return sys.intern(text)


def _opt_word(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


class Refusals:
    """Rows left out of a load, with why; shared by the builders of one load.

    A row of a load balancer's tree is reported with that load balancer and,
    once known, its amphorae: what an operator looks for (docs/operations.md).
    """

    def __init__(self) -> None:
        self._rows: list[tuple[str | None, RefusedRow]] = []

    @property
    def rows(self) -> list[RefusedRow]:
        return [row for _, row in self._rows]

    def add(
        self,
        table: str,
        key: object,
        amphora: str | None,
        error: Exception,
        lb: str | None = None,
    ) -> None:
        where = f"{table} {key} of load balancer {lb}: " if lb else ""
        detail = (where + str(error))[:300]
        self._rows.append((lb, RefusedRow(table, str(key), amphora, "unreadable", detail)))

    def attribute(self, amphorae_of: dict[str, list[str]]) -> None:
        """Name the amphorae of the load balancer each unattributed row belongs to."""
        self._rows = [
            (lb, replace(row, amphora_id=",".join(sorted(amphorae_of[lb]))))
            if row.amphora_id is None and lb in amphorae_of
            else (lb, row)
            for lb, row in self._rows
        ]


def load_amphorae(
    conn: sa.Connection, amphora_ids: Collection[Id], refusals: Refusals | None = None
) -> dict[Id, AmphoraTopology]:
    refusals = refusals if refusals is not None else Refusals()
    wanted = sorted({id_str(i) for i in amphora_ids})
    out: dict[Id, AmphoraTopology] = {}
    for part in chunks(wanted, IN_CHUNK):
        # Amphorae and their load balancers in one query.
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
            .select_from(_amp.outerjoin(_lb, _lb.c.id == _amp.c.load_balancer_id))
            .where(one_of(_amp.c.id, part, conn.dialect.name, IN_CHUNK))
            .where(_amp.c.status != C.DELETED)
        ).all()
        live = {r.lb_id: r for r in rows if r.lb_id is not None}
        lbs = _build_lbs(conn, live, refusals)
        amphorae_of: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            if r.lb_id is not None:
                amphorae_of[r.lb_id].append(r.id)
        refusals.attribute(amphorae_of)
        for r in rows:
            try:
                amp = _amphora(r, lbs)
            except ValueError as exc:
                refusals.add("amphora", r.id, r.id, exc)
                continue
            if amp is not None:
                out[amp.id] = amp
    return out


def _amphora(r: sa.Row, lbs: dict[str, LoadBalancerTopology]) -> AmphoraTopology | None:
    """None when its load balancer could not be read (reported already)."""
    if r.status not in READABLE_AMPHORA_STATUSES:
        raise ValueError(f"amphora status {r.status!r} is not one of {READABLE_AMPHORA_STATUSES}")
    lb = None
    if r.lb_id is not None:
        lb = lbs.get(r.lb_id)
        if lb is None:
            return None
    return AmphoraTopology(
        id=id_bytes(r.id), status=_word(r.status), role=_opt_word(r.role), load_balancer=lb
    )


def load_load_balancers(
    conn: sa.Connection, lb_ids: Collection[str], refusals: Refusals | None = None
) -> dict[str, LoadBalancerTopology]:
    """Topologies keyed by textual id (the form amphora rows refer to)."""
    refusals = refusals if refusals is not None else Refusals()
    out: dict[str, LoadBalancerTopology] = {}
    for part in chunks(sorted(lb_ids), IN_CHUNK):
        rows = conn.execute(
            sa.select(
                _lb.c.id.label("lb_id"),
                _lb.c.enabled,
                _lb.c.provisioning_status,
                _lb.c.operating_status,
            )
            .where(one_of(_lb.c.id, part, conn.dialect.name, IN_CHUNK))
            .where(_lb.c.provisioning_status != C.DELETED)
        ).all()
        out.update(_build_lbs(conn, {r.lb_id: r for r in rows}, refusals))
    return out


def _build_lbs(
    conn: sa.Connection, lb_rows: dict[str, sa.Row], refusals: Refusals
) -> dict[str, LoadBalancerTopology]:
    """Rows carrying lb_id/enabled/statuses -> topologies (3 queries).

    A DELETED load balancer comes without listeners and pools.
    """
    if not lb_rows:
        return {}
    live = sorted(k for k, r in lb_rows.items() if r.provisioning_status != C.DELETED)
    listeners = _listeners_by_lb(conn, live, refusals) if live else {}
    pools = _pools_by_lb(conn, live, refusals) if live else {}
    out: dict[str, LoadBalancerTopology] = {}
    for lb_id, r in lb_rows.items():
        try:
            _check_statuses(r.provisioning_status, r.operating_status)
            out[lb_id] = LoadBalancerTopology(
                id=id_bytes(lb_id),
                enabled=bool(r.enabled),
                provisioning_status=_opt_word(r.provisioning_status),
                operating_status=_word(r.operating_status),
                listeners=tuple(listeners.get(lb_id, ())),
                pools=tuple(pools.get(lb_id, ())),
            )
        except ValueError as exc:
            refusals.add("load_balancer", lb_id, None, exc, lb_id)
    return out


def _check_statuses(provisioning: str | None, operating: str) -> None:
    if provisioning is not None and provisioning not in C.PROVISIONING_STATUSES:
        raise ValueError(f"provisioning_status {provisioning!r} is not a known status")
    if operating not in C.OPERATING_STATUSES:
        raise ValueError(f"operating_status {operating!r} is not a known status")


def _listeners_by_lb(
    conn: sa.Connection, lb_ids: Sequence[str], refusals: Refusals
) -> dict[str, list]:
    rows = conn.execute(
        sa.select(
            _listener.c.id,
            _listener.c.load_balancer_id,
            _listener.c.enabled,
            _listener.c.operating_status,
            _listener.c.default_pool_id,
        )
        .where(one_of(_listener.c.load_balancer_id, lb_ids, conn.dialect.name, IN_CHUNK))
        .where(_listener.c.provisioning_status != C.DELETED)
        .order_by(_listener.c.id)
    ).all()
    out: dict[str, list[ListenerTopology]] = defaultdict(list)
    for r in rows:
        try:
            _check_statuses(None, r.operating_status)
            listener = ListenerTopology(
                id=id_bytes(r.id),
                enabled=bool(r.enabled),
                operating_status=_word(r.operating_status),
                default_pool_id=_opt_id(r.default_pool_id),
            )
        except ValueError as exc:
            refusals.add("listener", r.id, None, exc, r.load_balancer_id)
            continue
        out[r.load_balancer_id].append(listener)
    return out


def _pools_by_lb(conn: sa.Connection, lb_ids: Sequence[str], refusals: Refusals) -> dict[str, list]:
    pool_rows = conn.execute(
        sa.select(_pool.c.id, _pool.c.load_balancer_id, _pool.c.enabled, _pool.c.operating_status)
        .where(one_of(_pool.c.load_balancer_id, lb_ids, conn.dialect.name, IN_CHUNK))
        .where(_pool.c.provisioning_status != C.DELETED)
        .order_by(_pool.c.id)
    ).all()
    member_rows = conn.execute(
        sa.select(
            _member.c.id,
            _member.c.pool_id,
            _member.c.enabled,
            _member.c.operating_status,
            _pool.c.load_balancer_id,
        )
        .join(_pool, _pool.c.id == _member.c.pool_id)
        .where(one_of(_pool.c.load_balancer_id, lb_ids, conn.dialect.name, IN_CHUNK))
        .where(_member.c.provisioning_status != C.DELETED)
        .order_by(_member.c.id)
    ).all()
    members: dict[str, list[MemberTopology]] = defaultdict(list)
    for m in member_rows:
        try:
            _check_statuses(None, m.operating_status)
            member = MemberTopology(
                id=id_bytes(m.id),
                pool_id=id_bytes(m.pool_id),
                enabled=bool(m.enabled),
                operating_status=_word(m.operating_status),
            )
        except ValueError as exc:
            refusals.add("member", m.id, None, exc, m.load_balancer_id)
            continue
        members[m.pool_id].append(member)
    out: dict[str, list[PoolTopology]] = defaultdict(list)
    for p in pool_rows:
        try:
            _check_statuses(None, p.operating_status)
            pool = PoolTopology(
                id=id_bytes(p.id),
                enabled=bool(p.enabled),
                operating_status=_word(p.operating_status),
                members=tuple(members.get(p.id, ())),
            )
        except ValueError as exc:
            refusals.add("pool", p.id, None, exc, p.load_balancer_id)
            continue
        out[p.load_balancer_id].append(pool)
    return out


def amphora_ids_of(conn: sa.Connection, lb_id: Id) -> list[Id]:
    """The live amphorae of one load balancer (for a cache refresh by LB)."""
    rows = conn.execute(
        sa.select(_amp.c.id)
        .where(_amp.c.load_balancer_id == id_str(lb_id))
        .where(_amp.c.status != C.DELETED)
        .order_by(_amp.c.id)
    ).scalars()
    out = []
    for r in rows:
        try:
            out.append(id_bytes(r))
        except ValueError:
            continue  # an unreadable id: load_amphorae reports it when asked for it
    return out

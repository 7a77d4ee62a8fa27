"""Read models for the operator's CLI: objects by id or name, lists, trees, totals.

Every function takes a Connection and returns plain values (dicts of str,
int, bool, None; times as naive UTC datetimes), so the CLI only formats.
Ages are measured against the database's clock (:func:`db_now`), the one
clock every manager and operator shares.

Objects whose provisioning status (amphora: status) is DELETED are left out
of lists unless a filter asks for that status, as the API hides them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from healthmgr.db.dbtime import db_now
from healthmgr.db.models import (
    Amphora,
    AmphoraHealth,
    AmphoraReport,
    FailoverRequest,
    HealthMonitor,
    Listener,
    ListenerStatistics,
    LoadBalancer,
    ManagerRecord,
    Member,
    Pool,
)
from healthmgr.rules import constants as C
from healthmgr.wire.ids import canonical_id

Row = dict[str, Any]

_lb = LoadBalancer
_listener = Listener
_pool = Pool
_member = Member
_hm = HealthMonitor
_amp = Amphora
_health = AmphoraHealth
_report = AmphoraReport
_req = FailoverRequest
_stats = ListenerStatistics
_manager = ManagerRecord

OPEN_FAILOVER_STATES = (C.FAILOVER_PENDING, C.FAILOVER_RUNNING)
STATS_COLUMNS = (
    "active_connections",
    "bytes_in",
    "bytes_out",
    "request_errors",
    "total_connections",
)
# A manager is live while its heartbeat_at is this recent and it has not stopped.
MANAGER_LIVE_WITHIN = dt.timedelta(seconds=10)


class LookupFailed(Exception):
    """No object, or several, answer to the id or name given."""


class NoSuchObject(LookupFailed):
    pass


class AmbiguousName(LookupFailed):
    pass


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of object the CLI names by id or name."""

    label: str  # as an operator says it: "load balancer"
    table: sa.Table
    named: bool = True


LOAD_BALANCER = Kind("load balancer", _lb)
LISTENER = Kind("listener", _listener)
POOL = Kind("pool", _pool)
MEMBER = Kind("member", _member)
AMPHORA = Kind("amphora", _amp, named=False)


def resolve(conn: sa.Connection, kind: Kind, ref: str, where: Iterable[Any] = ()) -> Row:
    """The one object of ``kind`` whose id, else whose name, is ``ref``."""
    table, conditions = kind.table, list(where)
    ident = canonical_id(ref)
    if ident is not None:
        row = conn.execute(sa.select(table).where(table.c.id == ident, *conditions)).first()
        if row is not None:
            return dict(row._mapping)
    if not kind.named:
        raise NoSuchObject(f"no {kind.label} with id {ref!r}")
    rows = conn.execute(
        sa.select(table).where(table.c.name == ref, *conditions).order_by(table.c.id).limit(6)
    ).all()
    if not rows:
        raise NoSuchObject(f"no {kind.label} with id or name {ref!r}")
    if len(rows) > 1:
        ids = ", ".join(r.id for r in rows[:5])
        more = ", ..." if len(rows) > 5 else ""
        raise AmbiguousName(
            f"{len(rows) if len(rows) <= 5 else 'more than 5'} {kind.label}s are named "
            f"{ref!r} ({ids}{more}): give the id"
        )
    return dict(rows[0]._mapping)


def _status_filters(
    table: sa.Table, operating: Sequence[str], provisioning: Sequence[str]
) -> list[Any]:
    out: list[Any] = []
    if operating:
        out.append(table.c.operating_status.in_(operating))
    if provisioning:
        out.append(table.c.provisioning_status.in_(provisioning))
    else:
        out.append(table.c.provisioning_status != C.DELETED)
    return out


def _rows(conn: sa.Connection, stmt: sa.Select) -> list[Row]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


# -- load balancers, listeners, pools, members -------------------------------------------


LB_COLUMNS = (
    "id", "name", "provisioning_status", "operating_status", "enabled", "topology", "provider",
)  # fmt: skip
LISTENER_COLUMNS = (
    "id", "name", "load_balancer_id", "protocol", "protocol_port", "default_pool_id",
    "enabled", "provisioning_status", "operating_status",
)  # fmt: skip
POOL_COLUMNS = (
    "id", "name", "load_balancer_id", "protocol", "lb_algorithm", "enabled",
    "provisioning_status", "operating_status",
)  # fmt: skip
MEMBER_COLUMNS = (
    "id", "name", "pool_id", "ip_address", "protocol_port", "weight", "backup", "enabled",
    "provisioning_status", "operating_status",
)  # fmt: skip


def list_load_balancers(
    conn: sa.Connection, *, operating: Sequence[str] = (), provisioning: Sequence[str] = ()
) -> list[Row]:
    cols = [_lb.c[name] for name in LB_COLUMNS]
    stmt = sa.select(*cols).where(*_status_filters(_lb, operating, provisioning))
    return _rows(conn, stmt.order_by(_lb.c.name, _lb.c.id))


def list_listeners(
    conn: sa.Connection,
    *,
    load_balancer: str | None = None,
    operating: Sequence[str] = (),
    provisioning: Sequence[str] = (),
) -> list[Row]:
    cols = [_listener.c[name] for name in LISTENER_COLUMNS]
    where = _status_filters(_listener, operating, provisioning)
    if load_balancer is not None:
        where.append(_listener.c.load_balancer_id == load_balancer)
    stmt = sa.select(*cols).where(*where)
    return _rows(conn, stmt.order_by(_listener.c.load_balancer_id, _listener.c.protocol_port))


def list_pools(
    conn: sa.Connection,
    *,
    load_balancer: str | None = None,
    operating: Sequence[str] = (),
    provisioning: Sequence[str] = (),
) -> list[Row]:
    cols = [_pool.c[name] for name in POOL_COLUMNS]
    where = _status_filters(_pool, operating, provisioning)
    if load_balancer is not None:
        where.append(_pool.c.load_balancer_id == load_balancer)
    stmt = sa.select(*cols).where(*where)
    return _rows(conn, stmt.order_by(_pool.c.load_balancer_id, _pool.c.name, _pool.c.id))


def list_members(
    conn: sa.Connection,
    *,
    pool: str | None = None,
    load_balancer: str | None = None,
    operating: Sequence[str] = (),
    provisioning: Sequence[str] = (),
) -> list[Row]:
    cols = [_member.c[name] for name in MEMBER_COLUMNS]
    where = _status_filters(_member, operating, provisioning)
    if pool is not None:
        where.append(_member.c.pool_id == pool)
    if load_balancer is not None:
        where.append(
            _member.c.pool_id.in_(
                sa.select(_pool.c.id).where(_pool.c.load_balancer_id == load_balancer)
            )
        )
    stmt = sa.select(*cols).where(*where)
    return _rows(conn, stmt.order_by(_member.c.pool_id, _member.c.name, _member.c.id))


def load_balancer_details(conn: sa.Connection, lb: Row) -> Row:
    """``lb`` with the ids of its listeners, pools and amphorae."""

    def ids(table: sa.Table) -> list[str]:
        stmt = sa.select(table.c.id).where(table.c.load_balancer_id == lb["id"])
        if "provisioning_status" in table.c:
            stmt = stmt.where(table.c.provisioning_status != C.DELETED)
        return list(conn.execute(stmt.order_by(table.c.id)).scalars())

    return {**lb, "listeners": ids(_listener), "pools": ids(_pool), "amphorae": ids(_amp)}


def pool_details(conn: sa.Connection, pool: Row) -> Row:
    """``pool`` with its listeners (whose default pool it is), members and health monitor."""
    listeners = conn.execute(
        sa.select(_listener.c.id)
        .where(_listener.c.default_pool_id == pool["id"])
        .order_by(_listener.c.id)
    ).scalars()
    members = conn.execute(
        sa.select(_member.c.id)
        .where(_member.c.pool_id == pool["id"], _member.c.provisioning_status != C.DELETED)
        .order_by(_member.c.id)
    ).scalars()
    monitor = conn.execute(sa.select(_hm.c.id).where(_hm.c.pool_id == pool["id"])).scalar()
    return {
        **pool,
        "listeners": list(listeners),
        "members": list(members),
        "health_monitor_id": monitor,
    }


# -- the status tree (Octavia's StatusResponse) -------------------------------------------


def status_tree(conn: sa.Connection, lb: Row) -> Row:
    """``{"loadbalancer": {...}}`` as Octavia's ``GET .../loadbalancers/{id}/status``.

    Listeners carry their default pool; pools that are no listener's default
    pool are listed under the load balancer's ``pools`` (only when there are any:
    Octavia's tree has no such key and drops them).
    """
    live = [_listener.c.provisioning_status != C.DELETED]
    listeners = _rows(
        conn,
        sa.select(_listener)
        .where(_listener.c.load_balancer_id == lb["id"], *live)
        .order_by(_listener.c.protocol_port, _listener.c.id),
    )
    pools = {
        p["id"]: p
        for p in _rows(
            conn,
            sa.select(_pool)
            .where(_pool.c.load_balancer_id == lb["id"], _pool.c.provisioning_status != C.DELETED)
            .order_by(_pool.c.name, _pool.c.id),
        )
    }
    members: dict[str, list[Row]] = {pid: [] for pid in pools}
    monitors: dict[str, Row] = {}
    if pools:
        for m in _rows(
            conn,
            sa.select(_member)
            .where(_member.c.pool_id.in_(list(pools)), _member.c.provisioning_status != C.DELETED)
            .order_by(_member.c.name, _member.c.id),
        ):
            members[m["pool_id"]].append(m)
        for h in _rows(conn, sa.select(_hm).where(_hm.c.pool_id.in_(list(pools)))):
            monitors[h["pool_id"]] = h

    def pool_node(p: Row) -> Row:
        node: Row = {
            "id": p["id"],
            "name": p["name"] or "",
            "provisioning_status": p["provisioning_status"],
            "operating_status": p["operating_status"],
        }
        hm = monitors.get(p["id"])
        if hm is not None:
            node["health_monitor"] = {
                "id": hm["id"],
                "name": hm["name"] or "",
                "type": hm["type"],
                "provisioning_status": hm["provisioning_status"],
                "operating_status": hm["operating_status"],
            }
        node["members"] = [
            {
                "id": m["id"],
                "name": m["name"] or "",
                "operating_status": m["operating_status"],
                "provisioning_status": m["provisioning_status"],
                "address": m["ip_address"],
                "protocol_port": m["protocol_port"],
            }
            for m in members[p["id"]]
        ]
        return node

    attached = set()
    listener_nodes = []
    for li in listeners:
        pool = pools.get(li["default_pool_id"] or "")
        if pool is not None:
            attached.add(pool["id"])
        listener_nodes.append(
            {
                "id": li["id"],
                "name": li["name"] or "",
                "operating_status": li["operating_status"],
                "provisioning_status": li["provisioning_status"],
                "pools": [pool_node(pool)] if pool is not None else [],
            }
        )
    node: Row = {
        "id": lb["id"],
        "name": lb["name"] or "",
        "operating_status": lb["operating_status"],
        "provisioning_status": lb["provisioning_status"],
        "listeners": listener_nodes,
    }
    loose = [pool_node(p) for pid, p in pools.items() if pid not in attached]
    if loose:
        node["pools"] = loose
    return {"loadbalancer": node}


def tree_extras(conn: sa.Connection, lb: Row) -> dict[str, Row]:
    """What the drawn tree shows beyond Octavia's shape: protocol and port, algorithm."""
    out: dict[str, Row] = {}
    for li in conn.execute(
        sa.select(_listener.c.id, _listener.c.protocol, _listener.c.protocol_port).where(
            _listener.c.load_balancer_id == lb["id"]
        )
    ):
        out[li.id] = {"protocol": li.protocol, "protocol_port": li.protocol_port}
    for p in conn.execute(
        sa.select(_pool.c.id, _pool.c.lb_algorithm).where(_pool.c.load_balancer_id == lb["id"])
    ):
        out[p.id] = {"lb_algorithm": p.lb_algorithm}
    return out


# -- statistics ------------------------------------------------------------------------


def sum_statistics(conn: sa.Connection, listener_ids: Sequence[str]) -> Row:
    """``listener_statistics`` summed over amphorae (and listeners), as Octavia's stats."""
    totals = {name: 0 for name in STATS_COLUMNS}
    if not listener_ids:
        return totals
    stmt = sa.select(*(sa.func.coalesce(sa.func.sum(_stats.c[n]), 0) for n in STATS_COLUMNS))
    row = conn.execute(stmt.where(_stats.c.listener_id.in_(list(listener_ids)))).one()
    return {name: int(value) for name, value in zip(STATS_COLUMNS, row, strict=True)}


def listener_ids_of(conn: sa.Connection, lb_id: str) -> list[str]:
    stmt = sa.select(_listener.c.id).where(_listener.c.load_balancer_id == lb_id)
    return list(conn.execute(stmt).scalars())


# -- amphorae ---------------------------------------------------------------------------


AMPHORA_COLUMNS = (
    "id", "load_balancer_id", "status", "role", "lb_network_ip", "last_update", "age",
    "stale", "busy", "observed_by",
)  # fmt: skip


def _amphora_select() -> sa.Select:
    return (
        sa.select(
            _amp,
            _health.c.last_update,
            _health.c.busy,
            _report.c.observed_by,
            _report.c.observed_at,
            _report.c.healthy,
        )
        .select_from(_amp)
        .outerjoin(_health, _health.c.amphora_id == _amp.c.id)
        .outerjoin(_report, _report.c.amphora_id == _amp.c.id)
    )


def _with_age(row: Row, now: dt.datetime, timeout: float) -> Row:
    last = row.get("last_update")
    age = None if last is None else round((now - last).total_seconds(), 1)
    row["age"] = age
    row["stale"] = age is not None and age > timeout
    row["busy"] = bool(row.get("busy"))
    return row


def list_amphorae(
    conn: sa.Connection,
    *,
    timeout: float,
    load_balancer: str | None = None,
    stale: bool = False,
    busy: bool = False,
    statuses: Sequence[str] = (),
) -> list[Row]:
    """Amphorae with their health: ``age`` (s, database clock), ``stale`` (> ``timeout``)."""
    now = db_now(conn)
    stmt = _amphora_select()
    if load_balancer is not None:
        stmt = stmt.where(_amp.c.load_balancer_id == load_balancer)
    if statuses:
        stmt = stmt.where(_amp.c.status.in_(statuses))
    else:
        stmt = stmt.where(_amp.c.status != C.DELETED)
    if stale:
        stmt = stmt.where(_health.c.last_update < now - dt.timedelta(seconds=timeout))
    if busy:
        stmt = stmt.where(_health.c.busy == sa.true())
    rows = _rows(conn, stmt.order_by(_amp.c.load_balancer_id, _amp.c.id))
    return [_with_age(r, now, timeout) for r in rows]


def amphora_details(conn: sa.Connection, amphora_id: str, *, timeout: float) -> Row | None:
    now = db_now(conn)
    row = conn.execute(_amphora_select().where(_amp.c.id == amphora_id)).first()
    if row is None:
        return None
    details = _with_age(dict(row._mapping), now, timeout)
    details["open_failover_requests"] = list_failover_requests(
        conn, amphora=amphora_id, states=OPEN_FAILOVER_STATES
    )
    return details


# -- failover requests ------------------------------------------------------------------


FAILOVER_COLUMNS = (
    "id", "amphora_id", "load_balancer_id", "state", "reason", "requested_by", "requested_at",
    "attempts", "owner", "lease_expires_at", "updated_at",
)  # fmt: skip


def list_failover_requests(
    conn: sa.Connection,
    *,
    states: Sequence[str] = (),
    amphora: str | None = None,
    load_balancer: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    stmt = sa.select(*(_req.c[n] for n in FAILOVER_COLUMNS))
    if states:
        stmt = stmt.where(_req.c.state.in_(states))
    if amphora is not None:
        stmt = stmt.where(_req.c.amphora_id == amphora)
    if load_balancer is not None:
        stmt = stmt.where(_req.c.load_balancer_id == load_balancer)
    stmt = stmt.order_by(_req.c.requested_at.desc(), _req.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return _rows(conn, stmt)


def failover_request(conn: sa.Connection, request_id: int) -> Row:
    row = conn.execute(sa.select(_req).where(_req.c.id == request_id)).first()
    if row is None:
        raise NoSuchObject(f"no failover request with id {request_id}")
    return dict(row._mapping)


# -- the cluster at a glance --------------------------------------------------------------


def managers(conn: sa.Connection) -> tuple[dt.datetime, list[Row]]:
    """(database now, every manager's row with ``live``), newest heartbeat first."""
    now = db_now(conn)
    rows = _rows(conn, sa.select(_manager).order_by(_manager.c.heartbeat_at.desc()))
    for row in rows:
        row["live"] = row["stopped_at"] is None and now - row["heartbeat_at"] <= MANAGER_LIVE_WITHIN
    return now, rows


def stopped_amphorae(conn: sa.Connection) -> list[str]:
    """Amphorae the circuit breaker stopped (FAILOVER_STOPPED)."""
    stmt = sa.select(_amp.c.id).where(_amp.c.status == C.FAILOVER_STOPPED).order_by(_amp.c.id)
    return list(conn.execute(stmt).scalars())

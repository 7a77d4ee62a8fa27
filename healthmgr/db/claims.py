"""Stale amphorae: count, claim (row lock, exactly once), circuit breaker.

A *candidate* for failover is an amphora whose ``amphora_health`` row is
older than the cutoff and not busy, whose ``amphora.status`` is ALLOCATED or
FAILOVER_STOPPED (Octavia leaves BOOTING, READY, DELETED, PENDING_DELETE,
ERROR alone), and whose load balancer, if it has one, is not PENDING_*
(the API's worker is changing it). An amphora with no load balancer is a
candidate too; its claim carries ``load_balancer_id=None``.

Claiming: ``SELECT ... FOR UPDATE SKIP LOCKED`` on ``amphora_health`` on
PostgreSQL and MariaDB (the amphora and load balancer tests are subqueries,
which a locking read does not lock, so a claim never blocks the writer's
status updates), then ``busy = true`` and a failover_request row, all in the
caller's transaction. On SQLite the transaction starts with BEGIN IMMEDIATE
(one writer at a time) and the claim is a single ``UPDATE ... RETURNING``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from healthmgr import constants as C
from healthmgr.db.models import Amphora, AmphoraHealth, FailoverRequest, LoadBalancer
from healthmgr.db.topology_queries import chunks
from healthmgr.wire.values import Id, id_bytes, id_str

CLAIMABLE_STATUSES = (C.ALLOCATED, C.FAILOVER_STOPPED)

_health = AmphoraHealth.__table__
_amp = Amphora.__table__
_lb = LoadBalancer.__table__
_req = FailoverRequest.__table__


@dataclass(frozen=True, slots=True)
class Claim:
    """A stale amphora this manager now owns (busy), and its request row."""

    amphora_id: Id
    load_balancer_id: Id | None
    request_id: int


def _stale(health: sa.TableClause, cutoff: dt.datetime, statuses=CLAIMABLE_STATUSES):
    """WHERE clause over ``health`` (the table or an alias) for candidates."""
    lb_pending = (
        sa.exists()
        .where(_lb.c.id == _amp.c.load_balancer_id)
        .where(_lb.c.provisioning_status.in_(C.PENDING_STATUSES))
    )
    amphora_ok = (
        sa.exists()
        .where(_amp.c.id == health.c.amphora_id)
        .where(_amp.c.status.in_(statuses))
        .where(~lb_pending)
    )
    return sa.and_(health.c.busy == sa.false(), health.c.last_update < cutoff, amphora_ok)


def count_stale(conn: sa.Connection, cutoff: dt.datetime) -> int:
    stmt = sa.select(sa.func.count()).select_from(_health).where(_stale(_health, cutoff))
    return int(conn.execute(stmt).scalar_one())


def stale_ids(conn: sa.Connection, cutoff: dt.datetime, statuses=CLAIMABLE_STATUSES) -> list[str]:
    rows = conn.execute(
        sa.select(_health.c.amphora_id)
        .where(_stale(_health, cutoff, statuses))
        .order_by(_health.c.amphora_id)
    )
    return list(rows.scalars())


def stop_stale(conn: sa.Connection, cutoff: dt.datetime) -> list[Id]:
    """Circuit breaker: stale ALLOCATED candidates become FAILOVER_STOPPED."""
    ids = stale_ids(conn, cutoff, statuses=(C.ALLOCATED,))
    for part in chunks(ids):
        conn.execute(
            sa.update(_amp)
            .where(_amp.c.id.in_(part))
            .where(_amp.c.status == C.ALLOCATED)
            .values(status=C.FAILOVER_STOPPED, updated_at=_now())
        )
    return [id_bytes(i) for i in ids]


def claim_stale(
    conn: sa.Connection, cutoff: dt.datetime, limit: int, manager: str, reason: str
) -> list[Claim]:
    if limit <= 0:
        return []
    if conn.dialect.name == "sqlite":
        ids = _mark_busy_sqlite(conn, cutoff, limit)
    else:
        ids = _lock_candidates(conn, cutoff, limit)
        if ids:
            conn.execute(sa.update(_health).where(_health.c.amphora_id.in_(ids)).values(busy=True))
    return _request_rows(conn, ids, manager, reason)


def _lock_candidates(conn: sa.Connection, cutoff: dt.datetime, limit: int) -> list[str]:
    stmt = (
        sa.select(_health.c.amphora_id)
        .where(_stale(_health, cutoff))
        .order_by(_health.c.last_update, _health.c.amphora_id)  # oldest first
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(conn.execute(stmt).scalars())


def _mark_busy_sqlite(conn: sa.Connection, cutoff: dt.datetime, limit: int) -> list[str]:
    inner = _health.alias("candidate")
    picked = (
        sa.select(inner.c.amphora_id)
        .where(_stale(inner, cutoff))
        .order_by(inner.c.last_update, inner.c.amphora_id)
        .limit(limit)
    )
    stmt = (
        sa.update(_health)
        .where(_health.c.amphora_id.in_(picked))
        .where(_health.c.busy == sa.false())
        .values(busy=True)
        .returning(_health.c.amphora_id, _health.c.last_update)
    )
    rows = conn.execute(stmt).all()
    return [r.amphora_id for r in sorted(rows, key=lambda r: (r.last_update, r.amphora_id))]


def _request_rows(conn: sa.Connection, ids: list[str], manager: str, reason: str) -> list[Claim]:
    if not ids:
        return []
    lb_of = dict(
        conn.execute(sa.select(_amp.c.id, _amp.c.load_balancer_id).where(_amp.c.id.in_(ids))).all()
    )
    now = _now()
    claims = []
    for amp in ids:  # few per round (bounded by the caller's limit)
        lb = lb_of.get(amp)
        result = conn.execute(
            sa.insert(_req).values(
                amphora_id=amp,
                load_balancer_id=lb,
                reason=reason[:255],
                requested_by=manager[:255],
                requested_at=now,
                state=C.FAILOVER_PENDING,
                attempts=0,
                updated_at=now,
            )
        )
        request_id = int(result.inserted_primary_key[0])
        claims.append(Claim(id_bytes(amp), id_bytes(lb) if lb else None, request_id))
    return claims


def update_request(
    conn: sa.Connection, request_id: int, state: str, attempts: int, last_error: str | None
) -> None:
    if state not in C.FAILOVER_STATES:
        raise ValueError(f"failover state {state!r} is not one of {C.FAILOVER_STATES}")
    result = conn.execute(
        sa.update(_req)
        .where(_req.c.id == request_id)
        .values(state=state, attempts=attempts, last_error=last_error, updated_at=_now())
    )
    if result.rowcount == 0:
        raise LookupError(f"no failover request with id {request_id}")


def set_request_state(conn: sa.Connection, request_id: int, state: str) -> None:
    conn.execute(
        sa.update(_req).where(_req.c.id == request_id).values(state=state, updated_at=_now())
    )


def set_busy(conn: sa.Connection, amphora_id: Id, busy: bool) -> None:
    conn.execute(
        sa.update(_health).where(_health.c.amphora_id == id_str(amphora_id)).values(busy=busy)
    )


def mark_lb_error(conn: sa.Connection, lb_id: Id) -> bool:
    result = conn.execute(
        sa.update(_lb)
        .where(_lb.c.id == id_str(lb_id))
        .where(_lb.c.provisioning_status != C.DELETED)
        .values(provisioning_status=C.ERROR, updated_at=_now())
    )
    return result.rowcount > 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)

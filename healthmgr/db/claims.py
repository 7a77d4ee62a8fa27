"""Stale amphorae: what the health check reads, claims (exactly once), leases.

A *candidate* for failover is an amphora whose ``amphora_health`` row is not
busy, whose ``amphora.status`` is ALLOCATED or FAILOVER_STOPPED (Octavia
leaves BOOTING, READY, DELETED, PENDING_DELETE, ERROR alone), and whose load
balancer, if it has one, is not PENDING_* (the API's worker is changing it).
An amphora with no load balancer is a candidate too.

Claiming: the candidates among the wanted ids are read without a lock (the
amphora and load balancer tests join other tables, and a locking read on
MariaDB locks every row of every table it reads), then their
``amphora_health`` rows alone are locked with ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL and MariaDB and re-checked (not busy, still stale),
then ``busy = true`` and a RUNNING ``failover_request`` row with a lease, all
in the caller's transaction. On SQLite the transaction
starts with BEGIN IMMEDIATE (one writer at a time) and the claim is a single
``UPDATE ... RETURNING``.

Claims are leases: the owner renews ``lease_expires_at`` (database clock)
while its driver runs; a RUNNING request whose lease expired belongs to a
manager that died, and any manager takes it over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from healthmgr.db.dbtime import db_now, utcnow
from healthmgr.db.in_lists import chunks, one_of
from healthmgr.db.models import (
    Amphora,
    AmphoraHealth,
    AmphoraReport,
    FailoverRequest,
    LoadBalancer,
    ManagerRecord,
)
from healthmgr.db.topology_queries import IN_CHUNK
from healthmgr.rules import constants as C
from healthmgr.wire.ids import Id, id_bytes, id_str

CLAIMABLE_STATUSES = (C.ALLOCATED, C.FAILOVER_STOPPED)
MANUAL = "manual"

_health = AmphoraHealth
_amp = Amphora
_lb = LoadBalancer
_req = FailoverRequest
_report = AmphoraReport
_mgr = ManagerRecord


@dataclass(frozen=True, slots=True)
class Claim:
    """A failover this manager now owns (amphora busy, request RUNNING under its lease)."""

    amphora_id: Id
    load_balancer_id: Id | None
    request_id: int
    reason: str = "heartbeat_timeout"
    attempts: int = 0  # attempts made before (a taken-over request)
    taken_over_from: str | None = None  # the previous owner, when taken over


@dataclass(frozen=True, slots=True)
class SilentRow:
    amphora_id: str
    load_balancer_id: str | None
    last_update: dt.datetime
    stopped: bool
    observed_by: str | None
    beating_unhealthy: bool  # its newest heartbeat, after last_update, failed the listener count


@dataclass(frozen=True, slots=True)
class ManagerRow:
    manager_id: str
    age: float  # seconds since its liveness write (database clock)
    impaired: bool
    impaired_reason: str | None
    healthy_for: float | None
    stopped: bool


@dataclass(frozen=True, slots=True)
class CheckRead:
    """One health check's reading of the database."""

    silent: list[SilentRow]
    silent_count: int
    fleet: int
    stopped_count: int
    recent_failovers: int
    managers: list[ManagerRow]
    db_now: dt.datetime


@dataclass(frozen=True, slots=True)
class TakeOver:
    claims: list[Claim]
    abandoned: list[tuple[int, str, str]]  # (request id, amphora id, why)


def _candidates(health: sa.TableClause, statuses: Sequence[str] = CLAIMABLE_STATUSES):
    """WHERE clause over ``health`` (the table or an alias) for candidates, any age."""
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
    return sa.and_(health.c.busy == sa.false(), amphora_ok)


def _stale(health: sa.TableClause, cutoff: dt.datetime, statuses=CLAIMABLE_STATUSES):
    return sa.and_(_candidates(health, statuses), health.c.last_update < cutoff)


# --- the health check's reading ----------------------------------------------


def read_for_check(
    conn: sa.Connection, suspect_cutoff: dt.datetime, window_start: dt.datetime, limit: int
) -> CheckRead:
    """Silent amphorae (oldest first, at most ``limit``), the counts the breaker
    needs, and every manager's liveness, in one transaction.

    The stale scan reads all of ``amphora_health``: it has no index on
    ``busy`` or ``last_update`` (revision 0003), so that a heartbeat's bump is
    a heap-only update on PostgreSQL. That adds no asymptotic cost: the fleet
    count below reads every row of the table each check anyway. The scan's
    result is the same as an index's: the WHERE and ORDER BY decide it.
    """
    amp = _amp.alias("a")  # not _amp itself: the candidate test correlates on it
    rows = conn.execute(
        sa.select(
            _health.c.amphora_id,
            _health.c.last_update,
            amp.c.status,
            amp.c.load_balancer_id,
            _report.c.observed_by,
            _report.c.observed_at,
            _report.c.healthy,
        )
        .select_from(
            _health.join(amp, amp.c.id == _health.c.amphora_id).outerjoin(
                _report, _report.c.amphora_id == _health.c.amphora_id
            )
        )
        .where(_stale(_health, suspect_cutoff))
        .order_by(_health.c.last_update, _health.c.amphora_id)
        .limit(limit)
    ).all()
    silent = [
        SilentRow(
            r.amphora_id,
            r.load_balancer_id,
            r.last_update,
            r.status == C.FAILOVER_STOPPED,
            r.observed_by,
            r.healthy is not None
            and not r.healthy
            and r.observed_at is not None
            and r.observed_at > r.last_update,
        )
        for r in rows
    ]
    count = len(silent)
    if count >= limit:
        count = _count(
            conn,
            sa.select(sa.func.count()).select_from(_health).where(_stale(_health, suspect_cutoff)),
        )
    fleet = _count(
        conn,
        sa.select(sa.func.count())
        .select_from(_health)
        .where(
            sa.exists()
            .where(_amp.c.id == _health.c.amphora_id)
            .where(_amp.c.status.in_(CLAIMABLE_STATUSES))
        ),
    )
    stopped = _count(
        conn,
        sa.select(sa.func.count()).select_from(_amp).where(_amp.c.status == C.FAILOVER_STOPPED),
    )
    recent = _count(
        conn,
        sa.select(sa.func.count())
        .select_from(_req)
        .where(_req.c.requested_at >= window_start)
        .where(_req.c.reason != MANUAL),
    )
    now = db_now(conn)
    return CheckRead(silent, count, fleet, stopped, recent, _managers(conn, now), now)


def _count(conn: sa.Connection, stmt: sa.Select) -> int:
    return int(conn.execute(stmt).scalar_one())


def _managers(conn: sa.Connection, now: dt.datetime) -> list[ManagerRow]:
    out = []
    for r in conn.execute(sa.select(_mgr)).all():
        healthy_for = None
        if r.healthy_since is not None and not r.impaired:
            healthy_for = (now - r.healthy_since).total_seconds()
        out.append(
            ManagerRow(
                r.manager_id,
                (now - r.heartbeat_at).total_seconds(),
                bool(r.impaired),
                r.impaired_reason,
                healthy_for,
                r.stopped_at is not None,
            )
        )
    return out


# --- verdicts: stop, claim ------------------------------------------------------


def stop(conn: sa.Connection, ids: Collection[str], cutoff: dt.datetime) -> list[str]:
    """Circuit breaker: these amphorae, if still stale ALLOCATED candidates,
    become FAILOVER_STOPPED (a later health bump returns them to ALLOCATED)."""
    stopped: list[str] = []
    for part in chunks(sorted(ids), IN_CHUNK):
        still = list(
            conn.execute(
                sa.select(_health.c.amphora_id)
                .where(one_of(_health.c.amphora_id, part, conn.dialect.name, IN_CHUNK))
                .where(_stale(_health, cutoff, statuses=(C.ALLOCATED,)))
            ).scalars()
        )
        if still:
            conn.execute(
                sa.update(_amp)
                .where(one_of(_amp.c.id, still, conn.dialect.name, IN_CHUNK))
                .where(_amp.c.status == C.ALLOCATED)
                .values(status=C.FAILOVER_STOPPED, updated_at=utcnow())
            )
        stopped += still
    return stopped


def claim(
    conn: sa.Connection,
    wanted: Mapping[str, str],
    cutoff: dt.datetime,
    manager: str,
    lease_seconds: float,
    limit: int | None = None,
) -> list[Claim]:
    """Claim these amphorae (id -> reason) if they are still stale candidates,
    at most ``limit`` of them, exactly once across managers: each becomes busy
    and gets a RUNNING request owned by ``manager`` under a lease. Rows another
    manager holds locked are skipped, not waited for, and the next ones taken
    instead: managers that decided alike share a burst of failovers."""
    ids = sorted(wanted)
    if not ids or (limit is not None and limit <= 0):
        return []
    if conn.dialect.name == "sqlite":
        got = _mark_busy_sqlite(conn, ids, cutoff, limit)
    else:
        candidates = list(
            conn.execute(
                sa.select(_health.c.amphora_id)
                .where(_health.c.amphora_id.in_(ids))
                .where(_stale(_health, cutoff))
            ).scalars()
        )
        got = _lock_health(conn, candidates, cutoff, limit) if candidates else []
        if got:
            conn.execute(sa.update(_health).where(_health.c.amphora_id.in_(got)).values(busy=True))
    return _request_rows(conn, got, wanted, manager, lease_seconds)


def _lock_health(
    conn: sa.Connection, ids: list[str], cutoff: dt.datetime, limit: int | None = None
) -> list[str]:
    """Lock these health rows (by primary key only), skipping rows another manager
    holds, and keep those still not busy and stale.

    Only the key in the WHERE: with a condition on ``busy`` or ``last_update``
    (not indexed) MariaDB would lock every row its scan passes, not only the
    ones it returns.
    """
    stmt = (
        sa.select(_health.c.amphora_id, _health.c.busy, _health.c.last_update)
        .where(_health.c.amphora_id.in_(sorted(ids)))
        .order_by(_health.c.amphora_id)
        .with_for_update(skip_locked=True)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = conn.execute(stmt).all()
    return [r.amphora_id for r in rows if not r.busy and r.last_update < cutoff]


def _mark_busy_sqlite(
    conn: sa.Connection, ids: list[str], cutoff: dt.datetime, limit: int | None = None
) -> list[str]:
    inner = _health.alias("candidate")
    picked = (
        sa.select(inner.c.amphora_id)
        .where(inner.c.amphora_id.in_(ids))
        .where(_stale(inner, cutoff))
        .order_by(inner.c.amphora_id)
    )
    if limit is not None:
        picked = picked.limit(limit)
    stmt = (
        sa.update(_health)
        .where(_health.c.amphora_id.in_(picked))
        .where(_health.c.busy == sa.false())
        .values(busy=True)
        .returning(_health.c.amphora_id)
    )
    return sorted(conn.execute(stmt).scalars())


def _request_rows(
    conn: sa.Connection,
    ids: list[str],
    wanted: Mapping[str, str],
    manager: str,
    lease_seconds: float,
) -> list[Claim]:
    if not ids:
        return []
    lb_of = dict(
        conn.execute(sa.select(_amp.c.id, _amp.c.load_balancer_id).where(_amp.c.id.in_(ids))).all()
    )
    now = utcnow()
    lease = db_now(conn) + dt.timedelta(seconds=lease_seconds)
    claims = []
    for amp in ids:  # few per round (bounded by the caller's limit)
        lb = lb_of.get(amp)
        reason = wanted.get(amp, "heartbeat_timeout")
        result = conn.execute(
            sa.insert(_req).values(
                amphora_id=amp,
                load_balancer_id=lb,
                reason=reason[:255],
                requested_by=manager[:255],
                requested_at=now,
                state=C.FAILOVER_RUNNING,
                attempts=0,
                updated_at=now,
                owner=manager[:255],
                lease_expires_at=lease,
            )
        )
        request_id = int(result.inserted_primary_key[0])
        claims.append(Claim(id_bytes(amp), id_bytes(lb) if lb else None, request_id, reason))
    return claims


# --- leases ---------------------------------------------------------------------


def take_over(
    conn: sa.Connection, manager: str, lease_seconds: float, limit: int, cutoff: dt.datetime
) -> TakeOver:
    """RUNNING requests whose lease expired (or that have none: manual
    requests, retries) become this manager's. An automatic request whose
    amphora beats again (or is gone) is abandoned instead: the verdict that
    made it no longer holds."""
    if limit <= 0:
        return TakeOver([], [])
    now = db_now(conn)
    stmt = (
        sa.select(
            _req.c.id,
            _req.c.amphora_id,
            _req.c.load_balancer_id,
            _req.c.reason,
            _req.c.attempts,
            _req.c.owner,
        )
        .where(_req.c.state == C.FAILOVER_RUNNING)
        .where(sa.or_(_req.c.lease_expires_at.is_(None), _req.c.lease_expires_at < now))
        .order_by(_req.c.id)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = conn.execute(stmt).all()
    claims: list[Claim] = []
    abandoned: list[tuple[int, str, str]] = []
    lease = now + dt.timedelta(seconds=lease_seconds)
    for r in rows:
        why = _no_longer_needed(conn, r.amphora_id, r.reason, cutoff)
        if why:
            _finish(conn, r.id, C.FAILOVER_ABANDONED, r.attempts, why, owner=r.owner)
            set_busy(conn, r.amphora_id, False)
            abandoned.append((r.id, r.amphora_id, why))
            continue
        conn.execute(
            sa.update(_req)
            .where(_req.c.id == r.id)
            .values(owner=manager[:255], lease_expires_at=lease, updated_at=utcnow())
        )
        set_busy(conn, r.amphora_id, True)
        claims.append(
            Claim(
                id_bytes(r.amphora_id),
                id_bytes(r.load_balancer_id) if r.load_balancer_id else None,
                r.id,
                r.reason,
                r.attempts,
                r.owner,
            )
        )
    return TakeOver(claims, abandoned)


def _no_longer_needed(
    conn: sa.Connection, amphora_id: str, reason: str, cutoff: dt.datetime
) -> str | None:
    row = conn.execute(
        sa.select(_amp.c.status, _health.c.last_update)
        .select_from(_amp.outerjoin(_health, _health.c.amphora_id == _amp.c.id))
        .where(_amp.c.id == amphora_id)
    ).first()
    if row is None or row.status == C.DELETED:
        return "amphora no longer exists"
    if reason != MANUAL and row.last_update is not None and row.last_update >= cutoff:
        return "amphora beats again"
    return None


def renew(
    conn: sa.Connection, manager: str, request_ids: Collection[int], lease_seconds: float
) -> None:
    if not request_ids:
        return
    lease = db_now(conn) + dt.timedelta(seconds=lease_seconds)
    conn.execute(
        sa.update(_req)
        .where(_req.c.id.in_(sorted(request_ids)))
        .where(_req.c.owner == manager)
        .where(_req.c.state == C.FAILOVER_RUNNING)
        .values(lease_expires_at=lease)
    )


def progress(
    conn: sa.Connection, request_id: int, manager: str, attempts: int, error: str | None
) -> None:
    conn.execute(
        sa.update(_req)
        .where(_req.c.id == request_id)
        .where(_req.c.owner == manager)
        .values(attempts=attempts, last_error=error, updated_at=utcnow())
    )


def finish(
    conn: sa.Connection,
    claim: Claim,
    manager: str,
    state: str,
    attempts: int,
    error: str | None,
) -> bool:
    """Record a known outcome, if this manager still owns the request.

    PENDING (handed to the API's worker), SUCCEEDED and FAILED keep the
    amphora busy (replaced, or an operator's turn; FAILED also sets its load
    balancer to provisioning ERROR, as Octavia); ABANDONED clears busy (the
    driver was stopped with the outcome unknown: the amphora may be claimed
    again, and drivers are idempotent).
    """
    if not _finish(conn, claim.request_id, state, attempts, error, owner=manager):
        return False
    if state == C.FAILOVER_ABANDONED:
        set_busy(conn, claim.amphora_id, False)
    if state == C.FAILOVER_FAILED and claim.load_balancer_id is not None:
        mark_lb_error(conn, claim.load_balancer_id)
    return True


def _finish(
    conn: sa.Connection,
    request_id: int,
    state: str,
    attempts: int,
    error: str | None,
    *,
    owner: str | None,
) -> bool:
    if state not in C.FAILOVER_STATES:
        raise ValueError(f"failover state {state!r} is not one of {C.FAILOVER_STATES}")
    stmt = (
        sa.update(_req)
        .where(_req.c.id == request_id)
        .where(_req.c.state == C.FAILOVER_RUNNING)
        .values(
            state=state,
            attempts=attempts,
            last_error=error,
            owner=None,
            lease_expires_at=None,
            updated_at=utcnow(),
        )
    )
    stmt = stmt.where(_req.c.owner.is_(None) if owner is None else _req.c.owner == owner)
    return conn.execute(stmt).rowcount > 0


def set_busy(conn: sa.Connection, amphora_id: Id | str, busy: bool) -> None:
    amp = amphora_id if isinstance(amphora_id, str) else id_str(amphora_id)
    conn.execute(sa.update(_health).where(_health.c.amphora_id == amp).values(busy=busy))


def mark_lb_error(conn: sa.Connection, lb_id: Id) -> bool:
    result = conn.execute(
        sa.update(_lb)
        .where(_lb.c.id == id_str(lb_id))
        .where(_lb.c.provisioning_status != C.DELETED)
        .values(provisioning_status=C.ERROR, updated_at=utcnow())
    )
    return result.rowcount > 0

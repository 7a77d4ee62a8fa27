"""The operator's write actions, each one transaction that either happens whole or not at all.

A state the action does not apply to raises :class:`StateConflict` before
anything is written. The amphora's ``amphora_health`` row is locked first
(``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB, ``BEGIN IMMEDIATE`` on
SQLite), so a manager claiming the same amphora waits, then sees the result.

Manual requests and retries follow the managers' lease protocol: a RUNNING
request with no owner and no lease is taken over by the next live manager,
which runs the configured failover driver for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from healthmgr.db.engine import connect
from healthmgr.db.models import Amphora, AmphoraHealth, FailoverRequest
from healthmgr.db.queries import (
    AMPHORA,
    OPEN_FAILOVER_STATES,
    NoSuchObject,
    Row,
    db_now,
    failover_request,
    list_failover_requests,
    resolve,
)
from healthmgr.rules import constants as C

_amp = Amphora
_health = AmphoraHealth
_req = FailoverRequest

MANUAL_REASON = "manual"
RETRYABLE_STATES = (C.FAILOVER_FAILED, C.FAILOVER_ABANDONED)
T = TypeVar("T")


class StateConflict(Exception):
    """The object is not in a state the action applies to; nothing was changed."""


def in_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    """``work(conn)`` in one write transaction (BEGIN IMMEDIATE on SQLite)."""
    with connect(engine) as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            return work(conn)


def _lock_health(conn: sa.Connection, amphora_id: str) -> Row | None:
    stmt = sa.select(_health).where(_health.c.amphora_id == amphora_id)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return None if row is None else dict(row._mapping)


def _set_busy(conn: sa.Connection, amphora_id: str, now: dt.datetime) -> None:
    """busy = true, inserting the health row (last_update = now) when there is none."""
    if _lock_health(conn, amphora_id) is None:
        conn.execute(sa.insert(_health).values(amphora_id=amphora_id, last_update=now, busy=True))
    else:
        conn.execute(sa.update(_health).where(_health.c.amphora_id == amphora_id).values(busy=True))


def _open_requests(conn: sa.Connection, amphora_id: str) -> list[Row]:
    return list_failover_requests(conn, amphora=amphora_id, states=OPEN_FAILOVER_STATES)


def _describe(request: Row) -> str:
    owner = f", owner {request['owner']}" if request.get("owner") else ""
    return f"request {request['id']} ({request['state']}{owner})"


def request_failover(engine: sa.Engine, amphora_ref: str, requested_by: str) -> Row:
    """A manual failover: a RUNNING request without owner or lease, and busy = true.

    Refused while the amphora has an open (PENDING or RUNNING) request, or is DELETED.
    """

    def work(conn: sa.Connection) -> Row:
        amphora = resolve(conn, AMPHORA, amphora_ref)
        if amphora["status"] == C.DELETED:
            raise StateConflict(f"amphora {amphora['id']} is DELETED")
        now = db_now(conn)
        _lock_health(conn, amphora["id"])
        if open_ := _open_requests(conn, amphora["id"]):
            raise StateConflict(
                f"amphora {amphora['id']} has an open failover {_describe(open_[0])}"
            )
        result = conn.execute(
            sa.insert(_req).values(
                amphora_id=amphora["id"],
                load_balancer_id=amphora["load_balancer_id"],
                reason=MANUAL_REASON,
                requested_by=requested_by,
                requested_at=now,
                state=C.FAILOVER_RUNNING,
                attempts=0,
                updated_at=now,
                owner=None,
                lease_expires_at=None,
            )
        )
        _set_busy(conn, amphora["id"], now)
        return failover_request(conn, int(result.inserted_primary_key[0]))

    return in_transaction(engine, work)


def release(engine: sa.Engine, amphora_ref: str, *, force: bool = False) -> Row:
    """busy = false. Refused while a RUNNING request holds an unexpired lease, unless ``force``.

    Returns the amphora's id, whether it was busy, and its open requests (left as they are).
    """

    def work(conn: sa.Connection) -> Row:
        amphora = resolve(conn, AMPHORA, amphora_ref)
        health = _lock_health(conn, amphora["id"])
        now = db_now(conn)
        open_ = _open_requests(conn, amphora["id"])
        leased = [
            r
            for r in open_
            if r["state"] == C.FAILOVER_RUNNING
            and r["lease_expires_at"] is not None
            and r["lease_expires_at"] > now
        ]
        if leased and not force:
            lease = leased[0]
            raise StateConflict(
                f"amphora {amphora['id']}: failover {_describe(lease)} holds a lease until "
                f"{lease['lease_expires_at']:%Y-%m-%d %H:%M:%S} UTC; "
                "wait for it, or pass --force"
            )
        was_busy = bool(health and health["busy"])
        if was_busy:
            conn.execute(
                sa.update(_health).where(_health.c.amphora_id == amphora["id"]).values(busy=False)
            )
        return {"id": amphora["id"], "was_busy": was_busy, "busy": False, "open_requests": open_}

    return in_transaction(engine, work)


def resume(engine: sa.Engine, amphora_ref: str) -> Row:
    """FAILOVER_STOPPED (stopped by the circuit breaker) back to ALLOCATED."""

    def work(conn: sa.Connection) -> Row:
        amphora = resolve(conn, AMPHORA, amphora_ref)
        if amphora["status"] != C.FAILOVER_STOPPED:
            raise StateConflict(
                f"amphora {amphora['id']} is {amphora['status']}, not {C.FAILOVER_STOPPED}"
            )
        now = db_now(conn)
        done = conn.execute(
            sa.update(_amp)
            .where(_amp.c.id == amphora["id"], _amp.c.status == C.FAILOVER_STOPPED)
            .values(status=C.ALLOCATED, updated_at=now)
        )
        if done.rowcount != 1:  # changed between the read and the update
            raise StateConflict(f"amphora {amphora['id']} is no longer {C.FAILOVER_STOPPED}")
        return {"id": amphora["id"], "previous_status": C.FAILOVER_STOPPED, "status": C.ALLOCATED}

    return in_transaction(engine, work)


def retry(engine: sa.Engine, request_id: int) -> Row:
    """A FAILED or ABANDONED request back to RUNNING without owner or lease, busy = true.

    ``attempts`` and ``last_error`` are kept. Refused while the amphora has another
    open request.
    """

    def work(conn: sa.Connection) -> Row:
        request = _lock_request(conn, request_id)
        if request["state"] not in RETRYABLE_STATES:
            raise StateConflict(
                f"failover request {request_id} is {request['state']}; only "
                f"{' or '.join(RETRYABLE_STATES)} requests can be retried"
            )
        _lock_health(conn, request["amphora_id"])
        others = [r for r in _open_requests(conn, request["amphora_id"]) if r["id"] != request_id]
        if others:
            raise StateConflict(
                f"amphora {request['amphora_id']} has an open failover {_describe(others[0])}"
            )
        now = db_now(conn)
        conn.execute(
            sa.update(_req)
            .where(_req.c.id == request_id)
            .values(state=C.FAILOVER_RUNNING, owner=None, lease_expires_at=None, updated_at=now)
        )
        _set_busy(conn, request["amphora_id"], now)
        return {**failover_request(conn, request_id), "previous_state": request["state"]}

    return in_transaction(engine, work)


def _lock_request(conn: sa.Connection, request_id: int) -> Row:
    stmt: Any = sa.select(_req).where(_req.c.id == request_id)
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise NoSuchObject(f"no failover request with id {request_id}")
    return dict(row._mapping)

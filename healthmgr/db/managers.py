"""Each manager's row in ``healthmgr_manager``: liveness and health, seen by the others.

Times are written in the database's clock (see :mod:`healthmgr.db.dbtime`);
the caller gives ages in seconds, measured on its own monotonic clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from healthmgr.db.dbtime import db_now
from healthmgr.db.models import ManagerRecord

_mgr = ManagerRecord


@dataclass(frozen=True, slots=True)
class Presence:
    manager_id: str
    hostname: str
    pid: int
    version: str
    impaired: bool
    impaired_reason: str | None
    healthy_for: float | None  # seconds; None while impaired
    since_flush: float | None  # seconds since the last committed flush
    since_check: float | None  # seconds since the last completed health check
    since_claim: float | None  # seconds since the last failover claim
    breaker_open: bool
    breaker_reason: str | None
    stopped: bool = False


def _ago(now: dt.datetime, seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else now - dt.timedelta(seconds=max(0.0, seconds))


def write(conn: sa.Connection, p: Presence, *, first: bool) -> None:
    """Upsert this manager's row; ``first`` (the process's first write) resets
    ``started_at`` and ``stopped_at`` for a manager id that ran before."""
    now = db_now(conn)
    values: dict[str, Any] = {
        "heartbeat_at": now,
        "impaired": p.impaired,
        "impaired_reason": (p.impaired_reason or None) and p.impaired_reason[:255],
        "healthy_since": _ago(now, p.healthy_for),
        "last_flush_at": _ago(now, p.since_flush),
        "last_check_at": _ago(now, p.since_check),
        "last_claim_at": _ago(now, p.since_claim),
        "breaker_open": p.breaker_open,
        "breaker_reason": (p.breaker_reason or None) and p.breaker_reason[:255],
        "stopped_at": now if p.stopped else None,
        "hostname": p.hostname[:255],
        "pid": p.pid,
        "version": p.version[:64],
    }
    if first:
        values["started_at"] = now
    done = conn.execute(
        sa.update(_mgr).where(_mgr.c.manager_id == p.manager_id).values(**values)
    ).rowcount
    if not done:
        values.setdefault("started_at", now)
        conn.execute(sa.insert(_mgr).values(manager_id=p.manager_id[:255], **values))

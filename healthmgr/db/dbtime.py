"""Time as the database holds it (naive UTC), and the database's clock.

The database's clock is the one clock every manager shares.

Managers compare each other's liveness (``healthmgr_manager.heartbeat_at``)
and failover leases against it, so those comparisons need no synchronised
manager clocks. Naive UTC datetimes, as every time column holds.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

_NOW_SQL = {
    "postgresql": "SELECT CAST(timezone('UTC', statement_timestamp()) AS timestamp)",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def utcnow() -> dt.datetime:
    """This host's clock, naive UTC (as every time column holds it)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def db_now(conn: sa.Connection) -> dt.datetime:
    """The database server's current time (naive UTC)."""
    value = conn.exec_driver_sql(_NOW_SQL[conn.dialect.name]).scalar_one()
    if isinstance(value, str):  # SQLite
        return dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value

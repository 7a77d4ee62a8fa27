"""Octavia's database as healthmgr's: what is whose, and how to recognise it.

In Octavia mode (``[database] schema = "octavia"``) the database's schema was
created by Octavia's own Alembic migrations (``octavia-db-manage upgrade
head``). healthmgr reads Octavia's tables and writes only what Octavia's health
manager writes there:

- ``amphora_health`` (``last_update``, ``busy``);
- ``operating_status`` of ``load_balancer``, ``listener``, ``pool``, ``member``
  (and their ``updated_at``, as Octavia's repositories set it);
- ``listener_statistics`` (the totals and ``active_connections``);
- on failover, ``load_balancer.provisioning_status`` (PENDING_UPDATE by the
  test-and-set, ERROR when a failover failed) and ``amphora.status``
  (FAILOVER_STOPPED and back to ALLOCATED, as Octavia's circuit breaker).

Everything else healthmgr keeps is in tables of its own (:data:`OWN_TABLES`),
created by its own migration chain (``healthmgr/db/octavia_migrations``),
versioned in ``healthmgr_alembic_version``: it never touches Octavia's
``alembic_version`` and never alters Octavia's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

from healthmgr.db.models import (
    NAMING,
    AmphoraReport,
    FailoverRequest,
    ManagerRecord,
    UTCDateTime,
)
from healthmgr.rules import constants as C

NATIVE = "healthmgr"
OCTAVIA = "octavia"
AUTO = "auto"
SCHEMAS = (NATIVE, OCTAVIA)

OCTAVIA_VERSION_TABLE = "alembic_version"  # Octavia's: read, never written
# Tables only Octavia's schema has (its status lookup tables): how we know it.
OCTAVIA_MARKERS = ("provisioning_status", "operating_status")
# Octavia's tables healthmgr reads or writes; all must be there.
OCTAVIA_TABLES = (
    "load_balancer",
    "amphora",
    "amphora_health",
    "listener",
    "pool",
    "member",
    "health_monitor",
    "listener_statistics",
    *OCTAVIA_MARKERS,
)
# Values healthmgr may write into columns that reference Octavia's lookup tables.
WRITTEN_OPERATING = C.OPERATING_STATUSES
WRITTEN_PROVISIONING = (C.PENDING_UPDATE, C.ERROR, C.ALLOCATED, C.FAILOVER_STOPPED)


# healthmgr's own tables in Octavia's database.
metadata = MetaData(naming_convention=NAMING)

# What turns absolute counters into exact deltas, per listener and amphora.
# Octavia's ``listener_statistics`` holds only the totals; the sequence and
# epoch of the last applied heartbeat and its absolute counters live here.
StatsState = Table(
    "healthmgr_listener_statistics",
    metadata,
    Column("listener_id", String(36), primary_key=True),
    Column("amphora_id", String(36), primary_key=True),
    Column("counters_epoch", BigInteger),
    Column("last_seq", BigInteger, nullable=False),  # -1: no heartbeat applied yet
    Column("last_bytes_in", BigInteger, nullable=False),
    Column("last_bytes_out", BigInteger, nullable=False),
    Column("last_total_connections", BigInteger, nullable=False),
    Column("last_request_errors", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime),
)

# What the ``octavia`` failover driver did for a request: the steps that
# must not be done twice (the load balancer's test-and-set, the RPC cast).
OctaviaFailover = Table(
    "healthmgr_octavia_failover",
    metadata,
    Column("request_id", Integer, primary_key=True, autoincrement=False),
    Column("amphora_id", String(36), nullable=False),
    Column("load_balancer_id", String(36)),
    Column("lb_locked_at", UTCDateTime),
    Column("cast_at", UTCDateTime),
)


for _table in (ManagerRecord, AmphoraReport, FailoverRequest):
    # Without the native schema's PostgreSQL storage options (its revision
    # 0003's fill factor): o001 creates these tables as the native 0002 did.
    _copy = _table.to_metadata(metadata)
    if _copy.dialect_options["postgresql"]["with"]:
        del _copy.dialect_options["postgresql"]["with"]

OWN_TABLES = tuple(sorted(metadata.tables))


@dataclass(frozen=True, slots=True)
class Found:
    """What a database holds: whose schema, at which revisions."""

    kind: str  # "octavia", "healthmgr" or "empty"
    octavia_revision: str | None = None
    healthmgr_revision: str | None = None

    def describe(self) -> str:
        if self.kind == OCTAVIA:
            return f"Octavia's schema (alembic_version {self.octavia_revision or 'none'})"
        if self.kind == NATIVE:
            return "healthmgr's own schema"
        return "no schema"


def detect(conn: sa.Connection) -> Found:
    """Whose schema this database has (its tables; no writes)."""
    from healthmgr.db.migrate import VERSION_TABLE, read_revision

    tables = set(sa.inspect(conn).get_table_names())
    ours = read_revision(conn, VERSION_TABLE) if VERSION_TABLE in tables else None
    if all(t in tables for t in OCTAVIA_MARKERS):
        octavia = (
            read_revision(conn, OCTAVIA_VERSION_TABLE) if OCTAVIA_VERSION_TABLE in tables else None
        )
        return Found(OCTAVIA, octavia, ours)
    if ours is not None or "amphora_health" in tables:
        return Found(NATIVE, None, ours)
    return Found("empty", None, ours)


def missing_vocabulary(conn: sa.Connection) -> list[str]:
    """Values healthmgr writes that Octavia's lookup tables do not have."""
    out = []
    for table, wanted in (
        ("operating_status", WRITTEN_OPERATING),
        ("provisioning_status", WRITTEN_PROVISIONING),
    ):
        have = {r[0] for r in conn.execute(sa.text(f"SELECT name FROM {table}"))}
        out += [f"{table}.{v}" for v in wanted if v not in have]
    return out


def missing_tables(conn: sa.Connection) -> list[str]:
    tables = set(sa.inspect(conn).get_table_names())
    return [t for t in OCTAVIA_TABLES if t not in tables]

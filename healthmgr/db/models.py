"""SQLAlchemy Core tables shared with the API.

Table and column names follow Octavia's schema where Octavia has the thing
(``health_monitor.rise_threshold`` is the API's ``max_retries`` and
``fall_threshold`` its ``max_retries_down``, as in Octavia). Status columns are
constrained to Octavia's vocabularies by CHECK constraints.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import SchemaItem

from healthmgr.rules import constants as C

# Microsecond precision on MariaDB too (its DATETIME defaults to whole seconds).
UTCDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def vocabulary(length: int) -> String:
    """A column of a CHECK-constrained vocabulary: case-sensitive on MariaDB too.

    MariaDB's default collation is case-insensitive, so ``'online' IN ('ONLINE', ...)``
    would pass its CHECK; a binary collation makes it compare like the other databases.
    """
    return String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


# Counters are unsigned 64-bit on the wire; BIGINT holds them up to 2**63-1.
Counter = BigInteger

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# PostgreSQL fill factor of the tables every flush updates (amphora_health,
# healthmgr_amphora, listener_statistics): a page keeps 30 % free, so the new
# version of an updated row fits on its page and, as no indexed column
# changes, the update is heap-only (HOT): no new index entries, and pruning
# reclaims the old version without VACUUM. Revision 0003; docs/database.md,
# "Heap-only updates on PostgreSQL".
HOT_FILLFACTOR = 70


def _hot_table() -> dict[str, object]:
    return {"postgresql_with": {"fillfactor": HOT_FILLFACTOR}}


def _one_of(column: str, values: tuple[str, ...], nullable: bool = False) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    expr = f"{column} IN ({allowed})"
    if nullable:
        expr = f"{column} IS NULL OR {expr}"
    return CheckConstraint(expr, name=column)


# Core tables, not declarative ORM classes: the code uses only tables and
# columns, and mapping the classes cost most of this module's import time.
metadata = MetaData(naming_convention=NAMING)


def _api_object(name: str, *items: SchemaItem) -> Table:
    """A table of an API object (listener, pool, member, health monitor), in Octavia's
    column order: id, project and name, its own columns, then enabled and statuses."""
    return Table(
        name,
        metadata,
        Column("id", String(36), primary_key=True),
        Column("project_id", String(36)),
        Column("name", String(255)),
        *[i for i in items if isinstance(i, Column)],
        Column("enabled", Boolean, nullable=False),
        Column("provisioning_status", vocabulary(16), nullable=False),
        Column("operating_status", vocabulary(16), nullable=False),
        Column("created_at", UTCDateTime),
        Column("updated_at", UTCDateTime),
        _one_of("provisioning_status", C.PROVISIONING_STATUSES),
        _one_of("operating_status", C.OPERATING_STATUSES),
        *[i for i in items if not isinstance(i, Column)],
    )


LoadBalancer = Table(
    "load_balancer",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36)),
    Column("name", String(255)),
    Column("description", String(255)),
    Column("provisioning_status", vocabulary(16), nullable=False),
    Column("operating_status", vocabulary(16), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("topology", vocabulary(36)),
    Column("provider", String(64)),
    Column("created_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    _one_of("provisioning_status", C.PROVISIONING_STATUSES),
    _one_of("operating_status", C.OPERATING_STATUSES),
    _one_of("topology", C.TOPOLOGIES, nullable=True),
)

Amphora = Table(
    "amphora",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("compute_id", String(36)),
    Column("status", vocabulary(36), nullable=False),
    Column("load_balancer_id", String(36), ForeignKey("load_balancer.id")),
    Column("lb_network_ip", String(64)),
    Column("vrrp_ip", String(64)),
    Column("ha_ip", String(64)),
    Column("role", vocabulary(36)),
    Column("created_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    _one_of("status", C.AMPHORA_STATUSES),
    _one_of("role", C.ROLES, nullable=True),
    Index(None, "load_balancer_id"),
)

# No index but the key (revision 0003): an index on last_update or busy
# would make every heartbeat's bump a non-HOT update on PostgreSQL. The
# health checker's stale scan reads the table (claims.read_for_check).
AmphoraHealth = Table(
    "amphora_health",
    metadata,
    Column("amphora_id", String(36), primary_key=True),
    Column("last_update", UTCDateTime, nullable=False),
    Column("busy", Boolean, default=False, nullable=False),
    **_hot_table(),
)

Listener = _api_object(
    "listener",
    Column("load_balancer_id", String(36), ForeignKey("load_balancer.id")),
    Column("protocol", String(16), nullable=False),
    Column("protocol_port", Integer, nullable=False),
    Column("connection_limit", Integer),
    Column("default_pool_id", String(36), ForeignKey("pool.id")),
    Index(None, "load_balancer_id"),
)

Pool = _api_object(
    "pool",
    Column("load_balancer_id", String(36), ForeignKey("load_balancer.id")),
    Column("protocol", String(16), nullable=False),
    Column("lb_algorithm", String(255), nullable=False),
    Index(None, "load_balancer_id"),
)

Member = _api_object(
    "member",
    Column("pool_id", String(36), ForeignKey("pool.id"), nullable=False),
    Column("subnet_id", String(36)),
    Column("ip_address", String(64), nullable=False),
    Column("protocol_port", Integer, nullable=False),
    Column("weight", Integer),
    Column("backup", Boolean, default=False, nullable=False),
    Index(None, "pool_id"),
)

HealthMonitor = _api_object(
    "health_monitor",
    Column("pool_id", String(36), ForeignKey("pool.id"), unique=True, nullable=False),
    Column("type", String(36), nullable=False),
    Column("delay", Integer, nullable=False),
    Column("timeout", Integer, nullable=False),
    Column("rise_threshold", Integer, nullable=False),  # API: max_retries
    Column("fall_threshold", Integer, nullable=False),  # API: max_retries_down
    Column("http_method", String(16)),
    Column("url_path", String(2048)),
    Column("expected_codes", String(64)),
)

# Totals per listener and amphora, plus what turns absolute counters into deltas.
#
# ``last_*`` hold the absolute HAProxy counters of the heartbeat ``last_seq``
# under ``counters_epoch``; the manager adds ``new - last`` (or ``new`` after
# an epoch change) in one conditional UPDATE, so the comparison happens in
# the database and several managers never count a byte twice.
ListenerStatistics = Table(
    "listener_statistics",
    metadata,
    Column("listener_id", String(36), primary_key=True),
    Column("amphora_id", String(36), primary_key=True),
    Column("bytes_in", Counter, default=0, nullable=False),
    Column("bytes_out", Counter, default=0, nullable=False),
    Column("active_connections", Counter, default=0, nullable=False),
    Column("total_connections", Counter, default=0, nullable=False),
    Column("request_errors", Counter, default=0, nullable=False),
    Column("counters_epoch", Counter),
    Column("last_seq", Counter, default=0, nullable=False),
    Column("last_bytes_in", Counter, default=0, nullable=False),
    Column("last_bytes_out", Counter, default=0, nullable=False),
    Column("last_total_connections", Counter, default=0, nullable=False),
    Column("last_request_errors", Counter, default=0, nullable=False),
    Column("updated_at", UTCDateTime),
    **_hot_table(),
)

# A failover the health checker asked for, and what became of it.
#
# While a driver runs it, the row is RUNNING and ``owner`` holds a lease
# until ``lease_expires_at``, renewed as long as the owner lives. A RUNNING
# row whose lease expired belongs to a manager that died: any manager takes
# it over and runs the driver again (drivers are idempotent).
FailoverRequest = Table(
    "failover_request",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("amphora_id", String(36), nullable=False),
    Column("load_balancer_id", String(36)),
    Column("reason", String(255), nullable=False),
    Column("requested_by", String(255), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("state", vocabulary(16), nullable=False),
    Column("attempts", Integer, default=0, nullable=False),
    Column("last_error", Text),
    Column("updated_at", UTCDateTime),
    Column("owner", String(255)),
    Column("lease_expires_at", UTCDateTime),
    _one_of("state", C.FAILOVER_STATES),
    Index(None, "state", "requested_at"),
    Index(None, "amphora_id"),
    Index(None, "requested_at"),
)

# One row per manager process: its liveness and its own health.
#
# Managers share nothing but the database, so this is how they see each
# other. Times are the database's clock (``heartbeat_at``, ``healthy_since``),
# so comparing them needs no synchronised manager clocks.
ManagerRecord = Table(
    "healthmgr_manager",
    metadata,
    Column("manager_id", String(255), primary_key=True),
    Column("hostname", String(255)),
    Column("pid", Integer),
    Column("version", String(64)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),  # liveness
    Column("impaired", Boolean, default=False, nullable=False),
    Column("impaired_reason", String(255)),
    Column("healthy_since", UTCDateTime),  # None: impaired
    Column("last_flush_at", UTCDateTime),
    Column("last_check_at", UTCDateTime),
    Column("last_claim_at", UTCDateTime),
    Column("breaker_open", Boolean, default=False, nullable=False),
    Column("breaker_reason", String(255)),
    Column("stopped_at", UTCDateTime),
)

# healthmgr's own state per amphora: its newest heartbeat any manager processed.
#
# ``report_order`` is that heartbeat's recency (the native sequence number,
# or the arrival time in ms of an Octavia-format heartbeat) and
# ``report_digest`` a stable digest of the statuses it determines. Status
# writes are conditioned on it: a manager writes statuses only for a
# heartbeat newer than this one, and only when the digest differs, so an
# older heartbeat flushed later never overwrites a newer outcome, and a
# manager whose cache is behind still corrects the database.
# ``observed_by`` is the manager that processed it (the amphora's last
# observer), ``healthy`` its listener-count verdict, and ``native_since``
# when the amphora first spoke the native format (no downgrade after it).
AmphoraReport = Table(
    "healthmgr_amphora",
    metadata,
    Column("amphora_id", String(36), primary_key=True),
    Column("report_order", BigInteger, nullable=False),
    Column("report_digest", BigInteger, nullable=False),
    Column("observed_by", String(255), nullable=False),
    Column("observed_at", UTCDateTime, nullable=False),
    Column("healthy", Boolean, nullable=False),
    Column("native_since", UTCDateTime),
    **_hot_table(),
)

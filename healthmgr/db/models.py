"""SQLAlchemy models of the tables shared with the API.

Table and column names follow Octavia's schema where Octavia has the thing
(``health_monitor.rise_threshold`` is the API's ``max_retries`` and
``fall_threshold`` its ``max_retries_down``, as in Octavia). Status columns are
constrained to Octavia's vocabularies by CHECK constraints.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class LoadBalancer(Base):
    __tablename__ = "load_balancer"
    __table_args__ = (
        _one_of("provisioning_status", C.PROVISIONING_STATUSES),
        _one_of("operating_status", C.OPERATING_STATUSES),
        _one_of("topology", C.TOPOLOGIES, nullable=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(String(36))
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    provisioning_status: Mapped[str] = mapped_column(vocabulary(16))
    operating_status: Mapped[str] = mapped_column(vocabulary(16))
    enabled: Mapped[bool] = mapped_column(Boolean)
    topology: Mapped[str | None] = mapped_column(vocabulary(36))
    provider: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Amphora(Base):
    __tablename__ = "amphora"
    __table_args__ = (
        _one_of("status", C.AMPHORA_STATUSES),
        _one_of("role", C.ROLES, nullable=True),
        Index(None, "load_balancer_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    compute_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(vocabulary(36))
    load_balancer_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("load_balancer.id"))
    lb_network_ip: Mapped[str | None] = mapped_column(String(64))
    vrrp_ip: Mapped[str | None] = mapped_column(String(64))
    ha_ip: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(vocabulary(36))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AmphoraHealth(Base):
    __tablename__ = "amphora_health"
    # No index but the key (revision 0003): an index on last_update or busy
    # would make every heartbeat's bump a non-HOT update on PostgreSQL. The
    # health checker's stale scan reads the table (claims.read_for_check).
    __table_args__ = _hot_table()

    amphora_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    last_update: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    busy: Mapped[bool] = mapped_column(Boolean, default=False)


class Listener(Base):
    __tablename__ = "listener"
    __table_args__ = (
        _one_of("provisioning_status", C.PROVISIONING_STATUSES),
        _one_of("operating_status", C.OPERATING_STATUSES),
        Index(None, "load_balancer_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(String(36))
    name: Mapped[str | None] = mapped_column(String(255))
    load_balancer_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("load_balancer.id"))
    protocol: Mapped[str] = mapped_column(String(16))
    protocol_port: Mapped[int] = mapped_column(Integer)
    connection_limit: Mapped[int | None] = mapped_column(Integer)
    default_pool_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("pool.id"))
    enabled: Mapped[bool] = mapped_column(Boolean)
    provisioning_status: Mapped[str] = mapped_column(vocabulary(16))
    operating_status: Mapped[str] = mapped_column(vocabulary(16))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Pool(Base):
    __tablename__ = "pool"
    __table_args__ = (
        _one_of("provisioning_status", C.PROVISIONING_STATUSES),
        _one_of("operating_status", C.OPERATING_STATUSES),
        Index(None, "load_balancer_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(String(36))
    name: Mapped[str | None] = mapped_column(String(255))
    load_balancer_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("load_balancer.id"))
    protocol: Mapped[str] = mapped_column(String(16))
    lb_algorithm: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean)
    provisioning_status: Mapped[str] = mapped_column(vocabulary(16))
    operating_status: Mapped[str] = mapped_column(vocabulary(16))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Member(Base):
    __tablename__ = "member"
    __table_args__ = (
        _one_of("provisioning_status", C.PROVISIONING_STATUSES),
        _one_of("operating_status", C.OPERATING_STATUSES),
        Index(None, "pool_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(String(36))
    name: Mapped[str | None] = mapped_column(String(255))
    pool_id: Mapped[str] = mapped_column(String(36), ForeignKey("pool.id"))
    subnet_id: Mapped[str | None] = mapped_column(String(36))
    ip_address: Mapped[str] = mapped_column(String(64))
    protocol_port: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int | None] = mapped_column(Integer)
    backup: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean)
    provisioning_status: Mapped[str] = mapped_column(vocabulary(16))
    operating_status: Mapped[str] = mapped_column(vocabulary(16))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class HealthMonitor(Base):
    __tablename__ = "health_monitor"
    __table_args__ = (
        _one_of("provisioning_status", C.PROVISIONING_STATUSES),
        _one_of("operating_status", C.OPERATING_STATUSES),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(String(36))
    name: Mapped[str | None] = mapped_column(String(255))
    pool_id: Mapped[str] = mapped_column(String(36), ForeignKey("pool.id"), unique=True)
    type: Mapped[str] = mapped_column(String(36))
    delay: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[int] = mapped_column(Integer)
    rise_threshold: Mapped[int] = mapped_column(Integer)  # API: max_retries
    fall_threshold: Mapped[int] = mapped_column(Integer)  # API: max_retries_down
    http_method: Mapped[str | None] = mapped_column(String(16))
    url_path: Mapped[str | None] = mapped_column(String(2048))
    expected_codes: Mapped[str | None] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean)
    provisioning_status: Mapped[str] = mapped_column(vocabulary(16))
    operating_status: Mapped[str] = mapped_column(vocabulary(16))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ListenerStatistics(Base):
    """Totals per listener and amphora, plus what turns absolute counters into deltas.

    ``last_*`` hold the absolute HAProxy counters of the heartbeat ``last_seq``
    under ``counters_epoch``; the manager adds ``new - last`` (or ``new`` after
    an epoch change) in one conditional UPDATE, so the comparison happens in
    the database and several managers never count a byte twice.
    """

    __tablename__ = "listener_statistics"
    __table_args__ = _hot_table()

    listener_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    amphora_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    bytes_in: Mapped[int] = mapped_column(Counter, default=0)
    bytes_out: Mapped[int] = mapped_column(Counter, default=0)
    active_connections: Mapped[int] = mapped_column(Counter, default=0)
    total_connections: Mapped[int] = mapped_column(Counter, default=0)
    request_errors: Mapped[int] = mapped_column(Counter, default=0)
    counters_epoch: Mapped[int | None] = mapped_column(Counter)
    last_seq: Mapped[int] = mapped_column(Counter, default=0)
    last_bytes_in: Mapped[int] = mapped_column(Counter, default=0)
    last_bytes_out: Mapped[int] = mapped_column(Counter, default=0)
    last_total_connections: Mapped[int] = mapped_column(Counter, default=0)
    last_request_errors: Mapped[int] = mapped_column(Counter, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class FailoverRequest(Base):
    """A failover the health checker asked for, and what became of it.

    While a driver runs it, the row is RUNNING and ``owner`` holds a lease
    until ``lease_expires_at``, renewed as long as the owner lives. A RUNNING
    row whose lease expired belongs to a manager that died: any manager takes
    it over and runs the driver again (drivers are idempotent).
    """

    __tablename__ = "failover_request"
    __table_args__ = (
        _one_of("state", C.FAILOVER_STATES),
        Index(None, "state", "requested_at"),
        Index(None, "amphora_id"),
        Index(None, "requested_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    amphora_id: Mapped[str] = mapped_column(String(36))
    load_balancer_id: Mapped[str | None] = mapped_column(String(36))
    reason: Mapped[str] = mapped_column(String(255))
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(vocabulary(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ManagerRecord(Base):
    """One row per manager process: its liveness and its own health.

    Managers share nothing but the database, so this is how they see each
    other. Times are the database's clock (``heartbeat_at``, ``healthy_since``),
    so comparing them needs no synchronised manager clocks.
    """

    __tablename__ = "healthmgr_manager"

    manager_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # liveness
    impaired: Mapped[bool] = mapped_column(Boolean, default=False)
    impaired_reason: Mapped[str | None] = mapped_column(String(255))
    healthy_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # None: impaired
    last_flush_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_claim_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    breaker_open: Mapped[bool] = mapped_column(Boolean, default=False)
    breaker_reason: Mapped[str | None] = mapped_column(String(255))
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AmphoraReport(Base):
    """healthmgr's own state per amphora: its newest heartbeat any manager processed.

    ``report_order`` is that heartbeat's recency (the native sequence number,
    or the arrival time in ms of an Octavia-format heartbeat) and
    ``report_digest`` a stable digest of the statuses it determines. Status
    writes are conditioned on it: a manager writes statuses only for a
    heartbeat newer than this one, and only when the digest differs, so an
    older heartbeat flushed later never overwrites a newer outcome, and a
    manager whose cache is behind still corrects the database.
    ``observed_by`` is the manager that processed it (the amphora's last
    observer), ``healthy`` its listener-count verdict, and ``native_since``
    when the amphora first spoke the native format (no downgrade after it).
    """

    __tablename__ = "healthmgr_amphora"
    __table_args__ = _hot_table()

    amphora_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    report_order: Mapped[int] = mapped_column(BigInteger)
    report_digest: Mapped[int] = mapped_column(BigInteger)
    observed_by: Mapped[str] = mapped_column(String(255))
    observed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    healthy: Mapped[bool] = mapped_column(Boolean)
    native_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

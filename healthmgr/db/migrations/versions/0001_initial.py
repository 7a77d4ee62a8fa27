"""initial: the tables shared with the API, amphora health, statistics, failovers

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Written from autogenerate's output and checked by hand against
healthmgr/db/models.py. The vocabularies are spelled out here (not imported
from healthmgr.rules.constants) so this revision stays what it was when later
releases change the constants: a new status value is a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPERATING = ("ONLINE", "DEGRADED", "ERROR", "NO_MONITOR", "OFFLINE", "DRAINING")
PROVISIONING = ("ACTIVE", "PENDING_CREATE", "PENDING_UPDATE", "PENDING_DELETE", "DELETED", "ERROR")
AMPHORA = ("BOOTING", "ALLOCATED", "READY", "ERROR", "DELETED", "PENDING_DELETE", "FAILOVER_STOPPED")
TOPOLOGIES = ("SINGLE", "ACTIVE_STANDBY")
ROLES = ("STANDALONE", "MASTER", "BACKUP")
FAILOVER_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "ABANDONED")


def _time() -> sa.types.TypeEngine:
    # Microsecond precision on MariaDB too (its DATETIME defaults to whole seconds).
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _vocab(length: int) -> sa.types.TypeEngine:
    # A binary collation on MariaDB: its default one would let 'online' pass the CHECK.
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def _one_of(table: str, column: str, values: tuple[str, ...], nullable: bool = False):
    expr = f"{column} IN ({', '.join(repr(v) for v in values)})"
    if nullable:
        expr = f"{column} IS NULL OR {expr}"
    return sa.CheckConstraint(expr, name=op.f(f"ck_{table}_{column}"))


def _statuses(table: str) -> list:
    return [
        _one_of(table, "provisioning_status", PROVISIONING),
        _one_of(table, "operating_status", OPERATING),
    ]


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", _time(), nullable=True),
        sa.Column("updated_at", _time(), nullable=True),
    ]


def _id() -> sa.Column:
    return sa.Column("id", sa.String(36), nullable=False)


def upgrade() -> None:
    op.create_table(
        "amphora_health",
        sa.Column("amphora_id", sa.String(36), nullable=False),
        sa.Column("last_update", _time(), nullable=False),
        sa.Column("busy", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("amphora_id", name=op.f("pk_amphora_health")),
    )
    # The health checker's hot query: stale, not busy, oldest first.
    op.create_index(
        op.f("ix_amphora_health_busy_last_update"), "amphora_health", ["busy", "last_update"]
    )

    op.create_table(
        "failover_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("amphora_id", sa.String(36), nullable=False),
        sa.Column("load_balancer_id", sa.String(36), nullable=True),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_at", _time(), nullable=False),
        sa.Column("state", _vocab(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", _time(), nullable=True),
        _one_of("failover_request", "state", FAILOVER_STATES),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failover_request")),
    )
    op.create_index(op.f("ix_failover_request_amphora_id"), "failover_request", ["amphora_id"])
    op.create_index(
        op.f("ix_failover_request_state_requested_at"),
        "failover_request",
        ["state", "requested_at"],
    )

    counters = (
        "bytes_in",
        "bytes_out",
        "active_connections",
        "total_connections",
        "request_errors",
    )
    last = ("last_bytes_in", "last_bytes_out", "last_total_connections", "last_request_errors")
    op.create_table(
        "listener_statistics",
        sa.Column("listener_id", sa.String(36), nullable=False),
        sa.Column("amphora_id", sa.String(36), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in counters),
        sa.Column("counters_epoch", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in last),
        sa.Column("updated_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("listener_id", "amphora_id", name=op.f("pk_listener_statistics")),
    )

    op.create_table(
        "load_balancer",
        _id(),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("provisioning_status", _vocab(16), nullable=False),
        sa.Column("operating_status", _vocab(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("topology", _vocab(36), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        *_stamps(),
        *_statuses("load_balancer"),
        _one_of("load_balancer", "topology", TOPOLOGIES, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_load_balancer")),
    )

    op.create_table(
        "amphora",
        _id(),
        sa.Column("compute_id", sa.String(36), nullable=True),
        sa.Column("status", _vocab(36), nullable=False),
        sa.Column("load_balancer_id", sa.String(36), nullable=True),
        sa.Column("lb_network_ip", sa.String(64), nullable=True),
        sa.Column("vrrp_ip", sa.String(64), nullable=True),
        sa.Column("ha_ip", sa.String(64), nullable=True),
        sa.Column("role", _vocab(36), nullable=True),
        *_stamps(),
        _one_of("amphora", "status", AMPHORA),
        _one_of("amphora", "role", ROLES, nullable=True),
        sa.ForeignKeyConstraint(
            ["load_balancer_id"],
            ["load_balancer.id"],
            name=op.f("fk_amphora_load_balancer_id_load_balancer"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amphora")),
    )
    # amphora -> load balancer, for the topology cache.
    op.create_index(op.f("ix_amphora_load_balancer_id"), "amphora", ["load_balancer_id"])

    op.create_table(
        "pool",
        _id(),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("load_balancer_id", sa.String(36), nullable=True),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("lb_algorithm", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("provisioning_status", _vocab(16), nullable=False),
        sa.Column("operating_status", _vocab(16), nullable=False),
        *_stamps(),
        *_statuses("pool"),
        sa.ForeignKeyConstraint(
            ["load_balancer_id"],
            ["load_balancer.id"],
            name=op.f("fk_pool_load_balancer_id_load_balancer"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool")),
    )
    op.create_index(op.f("ix_pool_load_balancer_id"), "pool", ["load_balancer_id"])

    op.create_table(
        "health_monitor",
        _id(),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("pool_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(36), nullable=False),
        sa.Column("delay", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("rise_threshold", sa.Integer(), nullable=False),
        sa.Column("fall_threshold", sa.Integer(), nullable=False),
        sa.Column("http_method", sa.String(16), nullable=True),
        sa.Column("url_path", sa.String(2048), nullable=True),
        sa.Column("expected_codes", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("provisioning_status", _vocab(16), nullable=False),
        sa.Column("operating_status", _vocab(16), nullable=False),
        *_stamps(),
        *_statuses("health_monitor"),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_health_monitor_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_monitor")),
        sa.UniqueConstraint("pool_id", name=op.f("uq_health_monitor_pool_id")),
    )

    op.create_table(
        "listener",
        _id(),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("load_balancer_id", sa.String(36), nullable=True),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("protocol_port", sa.Integer(), nullable=False),
        sa.Column("connection_limit", sa.Integer(), nullable=True),
        sa.Column("default_pool_id", sa.String(36), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("provisioning_status", _vocab(16), nullable=False),
        sa.Column("operating_status", _vocab(16), nullable=False),
        *_stamps(),
        *_statuses("listener"),
        sa.ForeignKeyConstraint(
            ["default_pool_id"], ["pool.id"], name=op.f("fk_listener_default_pool_id_pool")
        ),
        sa.ForeignKeyConstraint(
            ["load_balancer_id"],
            ["load_balancer.id"],
            name=op.f("fk_listener_load_balancer_id_load_balancer"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listener")),
    )
    op.create_index(op.f("ix_listener_load_balancer_id"), "listener", ["load_balancer_id"])

    op.create_table(
        "member",
        _id(),
        sa.Column("project_id", sa.String(36), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("pool_id", sa.String(36), nullable=False),
        sa.Column("subnet_id", sa.String(36), nullable=True),
        sa.Column("ip_address", sa.String(64), nullable=False),
        sa.Column("protocol_port", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=True),
        sa.Column("backup", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("provisioning_status", _vocab(16), nullable=False),
        sa.Column("operating_status", _vocab(16), nullable=False),
        *_stamps(),
        *_statuses("member"),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_member_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member")),
    )
    op.create_index(op.f("ix_member_pool_id"), "member", ["pool_id"])


def downgrade() -> None:
    # Children before parents (foreign keys). Dropping a table drops its
    # indexes; dropping an index first fails on MariaDB when a foreign key needs it.
    for table in (
        "member",
        "listener",
        "health_monitor",
        "pool",
        "amphora",
        "load_balancer",
        "listener_statistics",
        "failover_request",
        "amphora_health",
    ):
        op.drop_table(table)

"""healthmgr's own tables beside Octavia's: managers, reports, failovers, statistics state

Revision ID: o001
Revises:
Create Date: 2026-12-01

The first revision of the ``octavia`` schema (healthmgr running on a database
that Octavia's own migrations created). Only healthmgr's tables: Octavia's are
Octavia's. ``healthmgr_manager``, ``healthmgr_amphora`` and
``failover_request`` are the native schema's tables at its revision 0002;
``healthmgr_listener_statistics`` holds the sequence, epoch and absolute
counters that Octavia's ``listener_statistics`` has no columns for;
``healthmgr_octavia_failover`` the steps the ``octavia`` failover driver took.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "o001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FAILOVER_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "ABANDONED")


def _time() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _vocab(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def upgrade() -> None:
    op.create_table(
        "healthmgr_manager",
        sa.Column("manager_id", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("started_at", _time(), nullable=False),
        sa.Column("heartbeat_at", _time(), nullable=False),
        sa.Column("impaired", sa.Boolean(), nullable=False),
        sa.Column("impaired_reason", sa.String(255), nullable=True),
        sa.Column("healthy_since", _time(), nullable=True),
        sa.Column("last_flush_at", _time(), nullable=True),
        sa.Column("last_check_at", _time(), nullable=True),
        sa.Column("last_claim_at", _time(), nullable=True),
        sa.Column("breaker_open", sa.Boolean(), nullable=False),
        sa.Column("breaker_reason", sa.String(255), nullable=True),
        sa.Column("stopped_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("manager_id", name=op.f("pk_healthmgr_manager")),
    )
    op.create_table(
        "healthmgr_amphora",
        sa.Column("amphora_id", sa.String(36), nullable=False),
        sa.Column("report_order", sa.BigInteger(), nullable=False),
        sa.Column("report_digest", sa.BigInteger(), nullable=False),
        sa.Column("observed_by", sa.String(255), nullable=False),
        sa.Column("observed_at", _time(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("native_since", _time(), nullable=True),
        sa.PrimaryKeyConstraint("amphora_id", name=op.f("pk_healthmgr_amphora")),
    )
    states = ", ".join(f"'{s}'" for s in FAILOVER_STATES)
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
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", _time(), nullable=True),
        sa.CheckConstraint(f"state IN ({states})", name=op.f("ck_failover_request_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failover_request")),
    )
    for columns in (["amphora_id"], ["state", "requested_at"], ["requested_at"]):
        name = "ix_failover_request_" + "_".join(columns)
        op.create_index(op.f(name), "failover_request", columns)
    last = ("last_bytes_in", "last_bytes_out", "last_total_connections", "last_request_errors")
    op.create_table(
        "healthmgr_listener_statistics",
        sa.Column("listener_id", sa.String(36), nullable=False),
        sa.Column("amphora_id", sa.String(36), nullable=False),
        sa.Column("counters_epoch", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in last),
        sa.Column("updated_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint(
            "listener_id", "amphora_id", name=op.f("pk_healthmgr_listener_statistics")
        ),
    )
    op.create_table(
        "healthmgr_octavia_failover",
        sa.Column("request_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("amphora_id", sa.String(36), nullable=False),
        sa.Column("load_balancer_id", sa.String(36), nullable=True),
        sa.Column("lb_locked_at", _time(), nullable=True),
        sa.Column("cast_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_healthmgr_octavia_failover")),
    )


def downgrade() -> None:
    op.drop_table("healthmgr_octavia_failover")
    op.drop_table("healthmgr_listener_statistics")
    for columns in (["requested_at"], ["state", "requested_at"], ["amphora_id"]):
        name = "ix_failover_request_" + "_".join(columns)
        op.drop_index(op.f(name), table_name="failover_request")
    op.drop_table("failover_request")
    op.drop_table("healthmgr_amphora")
    op.drop_table("healthmgr_manager")

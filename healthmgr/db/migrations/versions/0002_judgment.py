"""judgment: manager liveness, per-amphora report recency, failover leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

healthmgr_manager: each manager's liveness and health, so that managers see
each other (DESIGN.md, "Judgment under faults"). healthmgr_amphora: the
newest heartbeat any manager processed per amphora, the condition of every
status write, and its observer. failover_request gains a lease.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


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
    with op.batch_alter_table("failover_request") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", _time(), nullable=True))
    op.create_index(
        op.f("ix_failover_request_requested_at"), "failover_request", ["requested_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_failover_request_requested_at"), table_name="failover_request")
    with op.batch_alter_table("failover_request") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
    op.drop_table("healthmgr_amphora")
    op.drop_table("healthmgr_manager")

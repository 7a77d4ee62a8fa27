"""heap-only updates: amphora_health loses its (busy, last_update) index; fill factor 70

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Every heartbeat bumps ``amphora_health.last_update``. With ``last_update``
in an index, PostgreSQL cannot make that update heap-only (HOT): each bump
wrote a new index entry in both indexes. The index goes on every database
(the models are shared); the health checker's stale scan reads the table, as
its fleet count already did each check (``claims.read_for_check``).

On PostgreSQL only, the three tables every flush updates (``amphora_health``,
``healthmgr_amphora``, ``listener_statistics``) get fill factor 70: the new
version of a row fits on its page, so their updates are heap-only too. The
fill factor applies to pages written from now on; ``VACUUM FULL`` (or
``pg_repack``) rewrites the existing ones, at the operator's convenience
(docs/database.md). Octavia's database is never touched: this is the native
schema's chain, and ``healthmgr db upgrade`` refuses a database holding
Octavia's schema.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out, not imported from the models: this revision stays what it is.
FILLFACTOR = 70
HOT_TABLES = ("amphora_health", "healthmgr_amphora", "listener_statistics")
INDEX = "ix_amphora_health_busy_last_update"


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"  # offline (--sql) too


def upgrade() -> None:
    op.drop_index(INDEX, table_name="amphora_health")
    if _postgresql():
        for table in HOT_TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if _postgresql():
        for table in HOT_TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.create_index(INDEX, "amphora_health", ["busy", "last_update"])

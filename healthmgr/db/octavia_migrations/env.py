"""Alembic environment of healthmgr's own tables in Octavia's database.

Driven by healthmgr.db.migrate (no alembic.ini), as ``migrations/env.py``; it
only ever creates, alters or drops the tables in
``healthmgr.db.octavia_schema.OWN_TABLES`` and writes only
``healthmgr_alembic_version``, never Octavia's ``alembic_version``.

The caller puts an open connection in ``config.attributes["connection"]``; the
migrations run in its transaction. Offline mode (``--sql``) renders SQL for
``sqlalchemy.url`` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from healthmgr.db.migrate import VERSION_TABLE
from healthmgr.db.octavia_schema import OwnBase

config = context.config
target_metadata = OwnBase.metadata


def _options() -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        "version_table": VERSION_TABLE,
        "compare_type": True,
    }


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **_options()
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    # SQLite cannot ALTER most things: later revisions use batch mode there.
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        **_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    conn = config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("run migrations through healthmgr.db.migrate (no connection given)")
    run_online(conn)

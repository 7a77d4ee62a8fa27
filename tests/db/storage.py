"""PostgreSQL table storage options (``WITH (fillfactor = ...)``): the models'
and a database's. Alembic's autogenerate does not compare them, so the drift
tests compare them with these."""

from __future__ import annotations

import sqlalchemy as sa

from healthmgr.db import models


def model_storage(metadata: sa.MetaData = models.metadata) -> dict[str, dict[str, str]]:
    """Table -> its ``postgresql_with`` options (as PostgreSQL lists them), if it has any."""
    out = {}
    for table in metadata.sorted_tables:
        options = table.dialect_options["postgresql"]["with"]
        if options:
            out[table.name] = {key: str(value) for key, value in options.items()}
    return out


def database_storage(conn: sa.Connection, tables: list[str]) -> dict[str, dict[str, str]]:
    """Table -> its ``pg_class.reloptions``, for those of ``tables`` that have any."""
    rows = conn.execute(
        sa.text(
            "SELECT relname, reloptions FROM pg_class "
            "WHERE relkind = 'r' AND pg_table_is_visible(oid) AND relname = ANY(:names) "
            "AND reloptions IS NOT NULL"
        ),
        {"names": tables},
    ).all()
    return {name: dict(o.split("=", 1) for o in options) for name, options in rows}

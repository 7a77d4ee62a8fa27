"""Schema migrations: Alembic, shipped in the package, driven from code.

No ``alembic.ini`` is needed: :func:`alembic_config` points Alembic at
``healthmgr/db/migrations``. The version is kept in its own table,
``healthmgr_alembic_version``, so it cannot collide with the ``alembic_version``
of an API that shares the database.

The daemon calls :func:`check_current` at start and refuses to run against a
schema that is missing, behind, or unknown to this release. The head it expects
is pinned (:mod:`healthmgr.db.heads`) and the version table is read with plain
SQLAlchemy: Alembic is imported only by what migrates or walks the revisions.

Two schemas, two migration chains, one version table: ``healthmgr`` (the
native schema, ``migrations/``: every table, ours) and ``octavia``
(``octavia_migrations/``: only healthmgr's own tables, beside the tables of an
Octavia database that Octavia's migrations created; see
:mod:`healthmgr.db.octavia_schema`). Every function takes the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, MetaData, inspect
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement

from healthmgr.db import models
from healthmgr.db import octavia_schema as _oct
from healthmgr.db.engine import DatabaseError, connect, make_engine
from healthmgr.db.heads import HEADS

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

VERSION_TABLE = "healthmgr_alembic_version"
SCRIPT_LOCATION = Path(__file__).with_name("migrations")
NATIVE, OCTAVIA = _oct.NATIVE, _oct.OCTAVIA
OCTAVIA_SCRIPT_LOCATION = Path(__file__).with_name("octavia_migrations")
_OWN_TABLES = {NATIVE: frozenset(models.metadata.tables), OCTAVIA: frozenset(_oct.OWN_TABLES)}
UPGRADE_HINT = "run `healthmgr db upgrade`"
# Serializes concurrent `healthmgr db upgrade` runs on the servers.
_PG_LOCK_KEY = 0x6865616C74686D67  # "healthmg"
_MYSQL_LOCK_NAME = "healthmgr_migrate"
_LOCK_WAIT_S = 120


class SchemaError(DatabaseError):
    """The database schema does not match this release."""


class SchemaMissing(SchemaError):
    """The database has no healthmgr schema at all."""


class SchemaBehind(SchemaError):
    """The schema is at an older revision than this release expects."""

    def __init__(self, current: str, expected: str) -> None:
        super().__init__(f"database schema is at {current}, expected {expected}: {UPGRADE_HINT}")
        self.current = current
        self.expected = expected


class SchemaUnversioned(SchemaError):
    """healthmgr tables exist but no revision is recorded (e.g. created from schema/*.sql)."""


class SchemaUnknown(SchemaError):
    """The recorded revision is not one this release knows (a newer release migrated it)."""


def run_environment(target_metadata: MetaData) -> None:
    """The body of both chains' ``env.py``: run the migrations Alembic asked for.

    This module puts an open connection in ``config.attributes["connection"]``
    and the migrations run in its transaction (there is no offline mode).
    """
    from alembic import context

    conn = context.config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("run migrations through healthmgr.db.migrate (no connection given)")
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        # SQLite cannot ALTER most things: later revisions use batch mode there.
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def alembic_config(schema: str = NATIVE) -> Config:
    """An Alembic config for the packaged migrations of ``schema``."""
    from alembic.config import Config

    cfg = Config()
    location = OCTAVIA_SCRIPT_LOCATION if schema == OCTAVIA else SCRIPT_LOCATION
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _script(schema: str = NATIVE) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(schema=schema))


def head(schema: str = NATIVE) -> str:
    """The revision this release expects: the single head of the packaged migrations,
    pinned in :mod:`healthmgr.db.heads` (a test keeps it equal to Alembic's)."""
    return HEADS[schema]


def revisions(schema: str = NATIVE) -> list[str]:
    """All packaged revisions, oldest first."""
    return [s.revision for s in reversed(list(_script(schema).walk_revisions()))]


@contextmanager
def _engine(engine_or_url: Engine | str | URL) -> Iterator[Engine]:
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = make_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _current(conn: Connection) -> str | None:
    return read_revision(conn, VERSION_TABLE)


def read_revision(conn: Connection, version_table: str) -> str | None:
    """The revision recorded in ``version_table`` (read only), or None.

    What Alembic's ``MigrationContext.get_current_revision`` reads: the
    ``version_num`` rows of the table, none when it is missing.
    """
    if not inspect(conn).has_table(version_table):
        return None
    versions = sa.table(version_table, sa.column("version_num"))
    rows = list(conn.execute(sa.select(versions.c.version_num)).scalars())
    if len(rows) > 1:
        raise SchemaError(f"{version_table} records more than one revision: {', '.join(rows)}")
    return rows[0] if rows else None


def current(engine: Engine | str | URL) -> str | None:
    """The revision the database is at, or None when it has none recorded."""
    with _engine(engine) as eng, connect(eng) as conn:
        return _current(conn)


def _our_tables(conn: Connection, schema: str = NATIVE) -> set[str]:
    return set(inspect(conn).get_table_names()) & _OWN_TABLES[schema]


class SchemaMismatch(SchemaError):
    """The database holds the other schema than the configured one."""


def detect(engine: Engine | str | URL) -> _oct.Found:
    """Whose schema the database holds (see :func:`octavia_schema.detect`)."""
    with _engine(engine) as eng, connect(eng) as conn:
        return _oct.detect(conn)


def resolve_schema(engine: Engine | str | URL, configured: str) -> str:
    """``configured``, or for ``auto`` the schema the database holds (native when empty)."""
    if configured != _oct.AUTO:
        return configured
    return OCTAVIA if detect(engine).kind == OCTAVIA else NATIVE


def _check_kind(conn: Connection, schema: str) -> None:
    """Refuse a database that holds the other schema, naming the option to set."""
    found = _oct.detect(conn)
    if schema == NATIVE and found.kind == OCTAVIA:
        raise SchemaMismatch(
            f"the database holds {found.describe()}, and [database] schema is "
            f'"{NATIVE}": set schema = "{OCTAVIA}" (or --schema {OCTAVIA}) to run beside '
            "Octavia (docs/migrating-from-octavia.md)"
        )
    if schema != OCTAVIA:
        return
    if found.kind != OCTAVIA:
        raise SchemaMismatch(
            f'[database] schema is "{OCTAVIA}" but the database holds {found.describe()}: '
            "create Octavia's schema first (octavia-db-manage upgrade head)"
        )
    missing = _oct.missing_tables(conn)
    if missing:
        raise SchemaMismatch(f"Octavia's schema lacks tables healthmgr needs: {', '.join(missing)}")
    words = _oct.missing_vocabulary(conn)
    if words:
        raise SchemaMismatch(
            "Octavia's status lookup tables lack values healthmgr writes: " + ", ".join(words)
        )


def check_current(engine: Engine | str | URL, schema: str = NATIVE) -> str:
    """Return the revision if the schema is at head, else raise a :class:`SchemaError`."""
    expected = head(schema)
    with _engine(engine) as eng, connect(eng) as conn:
        _check_kind(conn, schema)
        rev = _current(conn)
        tables = _our_tables(conn, schema) if rev is None else set()
    if rev == expected:
        return rev
    if rev is None and not tables:
        raise SchemaMissing(
            f"database has no healthmgr schema (expected {expected}): {UPGRADE_HINT}"
        )
    if rev is None:
        raise SchemaUnversioned(
            f"database has healthmgr tables but no schema revision in {VERSION_TABLE}: "
            f"if they were created from schema/*.sql at {expected}, "
            f"run `healthmgr db stamp {expected}`"
        )
    if rev in revisions(schema):
        raise SchemaBehind(rev, expected)
    other = OCTAVIA if schema == NATIVE else NATIVE
    if rev in revisions(other):
        raise SchemaMismatch(
            f'database schema is at {rev}, a revision of the "{other}" schema, but '
            f'[database] schema is "{schema}"'
        )
    raise SchemaUnknown(
        f"database schema is at {rev}, which this healthmgr does not know "
        f"(expected {expected}): a newer healthmgr migrated it; upgrade healthmgr"
    )


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    """Hold a session lock around a whole migration transaction.

    The lock is released only after the transaction has ended: released before
    the commit, it would let the next upgrade read the version table as it was
    before this one and run the same migrations again.
    """
    name = conn.dialect.name
    if name == "postgresql":
        acquire = f"SELECT pg_advisory_lock({_PG_LOCK_KEY})"
        release = f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})"
    elif name in ("mysql", "mariadb"):
        acquire = f"SELECT GET_LOCK('{_MYSQL_LOCK_NAME}', {_LOCK_WAIT_S})"
        release = f"SELECT RELEASE_LOCK('{_MYSQL_LOCK_NAME}')"
    else:
        yield  # SQLite: BEGIN IMMEDIATE already excludes other writers
        return
    got = conn.exec_driver_sql(acquire).scalar()
    conn.commit()  # end the implicit transaction: the migration opens its own
    if name != "postgresql" and got != 1:
        raise SchemaError(f"another migration holds the lock {_MYSQL_LOCK_NAME!r}")
    try:
        yield
    finally:
        if not conn.invalidated:  # a lost session has lost its lock with it
            if conn.in_transaction():
                conn.rollback()
            conn.exec_driver_sql(release)
            conn.commit()


Target = Engine | str | URL
Revisions = tuple[str | None, str | None]


def _run(
    engine_or_url: Target,
    fn: Callable[[Config, str], object],
    revision: str,
    schema: str = NATIVE,
) -> Revisions:
    from alembic.util import CommandError

    with _engine(engine_or_url) as eng:
        conn = connect(eng).execution_options(sqlite_begin="IMMEDIATE")
        with conn, _migration_lock(conn):
            with conn.begin():
                _check_kind(conn, schema)
                before = _current(conn)
                cfg = alembic_config(schema=schema)
                cfg.attributes["connection"] = conn
                try:
                    fn(cfg, revision)
                except CommandError as e:
                    raise SchemaError(f"cannot migrate to {revision!r}: {e}") from e
                after = _current(conn)
            return before, after


def upgrade(engine_or_url: Target, revision: str = "head", schema: str = NATIVE) -> Revisions:
    """Upgrade the schema to ``revision`` in one transaction; returns (before, after).

    Running it again at head changes nothing. In the ``octavia`` schema only
    healthmgr's own tables are created.
    """
    from alembic import command

    return _run(engine_or_url, command.upgrade, revision, schema)


def downgrade(engine_or_url: Target, revision: str, schema: str = NATIVE) -> Revisions:
    """Downgrade the schema to ``revision`` (``"base"`` drops every healthmgr table)."""
    from alembic import command

    return _run(engine_or_url, command.downgrade, revision, schema)


def stamp(engine_or_url: Target, revision: str, schema: str = NATIVE) -> Revisions:
    """Record ``revision`` without running migrations (a schema created from schema/*.sql)."""
    from alembic import command

    return _run(engine_or_url, command.stamp, revision, schema)


# -- the DDL contract in schema/ ---------------------------------------------

DDL_DIALECTS: dict[str, str] = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "mysql": "MariaDB/MySQL",
}


def ddl(dialect: str) -> str:
    """CREATE statements for every table and index of the models, as in schema/<dialect>.sql.

    Tables in dependency order (ties by name), each followed by its indexes by
    name; one statement per paragraph, each ending in ``;``.
    """
    if dialect not in DDL_DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r} (choose from {', '.join(DDL_DIALECTS)})")
    sa_dialect = _sa_dialect(dialect)
    rev = head()
    lines = [
        f"-- healthmgr database schema for {DDL_DIALECTS[dialect]}, revision {rev}.",
        "-- Generated from healthmgr/db/models.py; do not edit. Regenerate with:",
        f"--   healthmgr db ddl --dialect {dialect} > schema/{dialect}.sql",
        "-- A database created from this file (not by `healthmgr db upgrade`) must",
        f"-- then be stamped: healthmgr db stamp {rev}",
    ]
    statements: list[str] = []
    for table in models.metadata.sorted_tables:
        statements.append(_compiled(CreateTable(table), sa_dialect))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(_compiled(CreateIndex(index), sa_dialect))
    return "\n".join(lines) + "\n\n" + "\n\n".join(f"{s};" for s in statements) + "\n"


def _sa_dialect(name: str) -> Dialect:
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    module = {"sqlite": sqlite, "postgresql": postgresql, "mysql": mysql}[name]
    return module.dialect()


def _compiled(element: ExecutableDDLElement, dialect: Dialect) -> str:
    text = str(element.compile(dialect=dialect)).expandtabs(4)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())

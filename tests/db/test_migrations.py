"""Migrations on SQLite, PostgreSQL and MariaDB: upgrade, no drift, version checks."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, event, inspect, text

from healthmgr.db import migrate, models
from healthmgr.db.engine import make_engine
from healthmgr.db.heads import HEADS

MODEL_TABLES = set(models.metadata.tables)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_head_is_the_single_packaged_revision() -> None:
    assert migrate.head() == "0003"
    assert migrate.revisions() == ["0001", "0002", "0003"]


@pytest.mark.parametrize("schema", [migrate.NATIVE, migrate.OCTAVIA])
def test_the_pinned_head_is_alembics(schema: str) -> None:
    """A new migration fails here until its head is pinned in healthmgr/db/heads.py."""
    script = ScriptDirectory.from_config(migrate.alembic_config(schema))
    assert HEADS[schema] == script.get_current_head()


def test_a_version_table_with_two_revisions_is_refused(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {migrate.VERSION_TABLE} VALUES ('0002')"))
        with pytest.raises(migrate.SchemaError, match="records more than one revision: "):
            migrate.check_current(engine)
    finally:
        engine.dispose()


def test_upgrade_from_empty_reaches_head(db_url: str) -> None:
    assert migrate.current(db_url) is None
    before, after = migrate.upgrade(db_url)
    assert (before, after) == (None, migrate.head())
    assert migrate.current(db_url) == migrate.head()
    assert migrate.check_current(db_url) == migrate.head()
    assert _tables(db_url) == MODEL_TABLES | {migrate.VERSION_TABLE}


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    migrate.upgrade(db_url)
    tables = _tables(db_url)
    assert migrate.upgrade(db_url) == (migrate.head(), migrate.head())
    assert _tables(db_url) == tables
    assert migrate.current(db_url) == migrate.head()


def test_migrations_match_the_models(db_url: str) -> None:
    """The drift test: autogenerate against a migrated database finds nothing to do."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": migrate.VERSION_TABLE}
            )
            diff = compare_metadata(ctx, models.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"migrations and models differ: {diff}"


def test_migrated_constraint_and_index_names_match_the_models(db_url: str) -> None:
    """autogenerate does not compare CHECK constraints: compare their names here."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            for table in models.metadata.sorted_tables:
                want_ck = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
                got_ck = {c["name"] for c in insp.get_check_constraints(table.name)}
                assert got_ck == want_ck, table.name
                want_ix = {i.name for i in table.indexes}
                got_ix = {i["name"] for i in insp.get_indexes(table.name)}
                # MariaDB also lists the unique key and the indexes it made for FKs.
                assert want_ix <= got_ix, table.name
    finally:
        engine.dispose()


def test_vocabulary_columns_compare_case_sensitively(db_url: str) -> None:
    """autogenerate does not compare collations: check the vocabulary columns' here."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            for table in models.metadata.sorted_tables:
                reflected = {c["name"]: c["type"] for c in insp.get_columns(table.name)}
                for column in table.columns:
                    want = column.type.dialect_impl(conn.dialect)
                    got = getattr(reflected[column.name], "collation", None)
                    assert got == getattr(want, "collation", None), f"{table.name}.{column.name}"
    finally:
        engine.dispose()


def test_check_current_on_an_empty_database(db_url: str) -> None:
    with pytest.raises(migrate.SchemaMissing) as err:
        migrate.check_current(db_url)
    assert str(err.value) == (
        f"database has no healthmgr schema (expected {migrate.head()}): run `healthmgr db upgrade`"
    )


def test_check_current_on_tables_without_a_revision(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.stamp(db_url, "base")
    assert migrate.current(db_url) is None
    with pytest.raises(migrate.SchemaUnversioned, match="healthmgr db stamp 0003"):
        migrate.check_current(db_url)
    migrate.stamp(db_url, "head")
    assert migrate.check_current(db_url) == migrate.head()


def test_check_current_on_an_unknown_revision(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(migrate.SchemaUnknown, match="at 9999, which this healthmgr does not know"):
        migrate.check_current(db_url)


NEWER_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("extra", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade():
    op.drop_table("extra")
"""


@pytest.fixture
def two_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The packaged migrations plus a fake 0004, as a newer release would ship them."""
    location = tmp_path / "migrations"
    shutil.copytree(migrate.SCRIPT_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "0004_extra.py").write_text(NEWER_REVISION)
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", location)
    monkeypatch.setitem(HEADS, migrate.NATIVE, "0004")  # pinned by that release
    return location


def test_check_current_on_an_older_revision(db_url: str, two_revisions: Path) -> None:
    assert migrate.head() == "0004"
    assert migrate.upgrade(db_url, "0003") == (None, "0003")
    with pytest.raises(migrate.SchemaBehind) as err:
        migrate.check_current(db_url)
    assert str(err.value) == (
        "database schema is at 0003, expected 0004: run `healthmgr db upgrade`"
    )
    assert (err.value.current, err.value.expected) == ("0003", "0004")
    assert migrate.upgrade(db_url) == ("0003", "0004")
    assert migrate.check_current(db_url) == "0004"


def test_downgrade_to_base_drops_every_table(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert migrate.downgrade(db_url, "base") == (migrate.head(), None)
    assert _tables(db_url) <= {migrate.VERSION_TABLE}
    assert migrate.upgrade(db_url) == (None, migrate.head())


def test_unknown_target_revision_is_a_clear_error(db_url: str) -> None:
    with pytest.raises(migrate.SchemaError, match="cannot migrate to 'nope'"):
        migrate.upgrade(db_url, "nope")


def test_concurrent_upgrades_run_one_after_the_other(server_db_url: str) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            results.append(migrate.upgrade(server_db_url))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    head = migrate.head()
    assert sorted(results, key=repr) == sorted([(None, head), (head, head), (head, head)], key=repr)


def test_the_migration_lock_is_released_after_the_commit(server_db_url: str) -> None:
    """Released before the commit, the lock lets the next upgrade read the old
    version table and run the same migrations again ("table already exists")."""
    engine = make_engine(server_db_url)
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, params, context, executemany) -> None:
        if "unlock" in statement.lower() or "release_lock" in statement.lower():
            seen.append("unlock")
        elif migrate.VERSION_TABLE in statement and statement.lstrip().upper().startswith(
            ("INSERT", "UPDATE")
        ):
            seen.append("version written")

    @event.listens_for(engine, "commit")
    def _commit(conn) -> None:
        seen.append("commit")

    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    written = seen.index("version written")
    assert "commit" in seen[written : seen.index("unlock")], seen


def test_the_drift_test_sees_a_difference(tmp_path: Path) -> None:
    """Guard against a blind drift test: a changed model must show up."""
    from sqlalchemy import Column, MetaData, String

    url = f"sqlite:///{tmp_path / 'drift.db'}"
    migrate.upgrade(url)
    changed = MetaData(naming_convention=models.metadata.naming_convention)
    for table in models.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["amphora"].append_column(Column("cert_expiration", String(36)))
    engine = make_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
        diff = compare_metadata(ctx, changed)
    engine.dispose()
    assert [d[0] for d in diff] == ["add_column"]

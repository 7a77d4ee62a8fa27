"""schema/*.sql is the contract with the API: it must be what the models generate."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import make_url

from healthmgr.db import migrate, models
from healthmgr.db.engine import make_engine
from tests.db.storage import database_storage, model_storage

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"


@pytest.mark.parametrize("dialect", sorted(migrate.DDL_DIALECTS))
def test_checked_in_ddl_matches_the_models(dialect: str) -> None:
    path = SCHEMA_DIR / f"{dialect}.sql"
    generated = migrate.ddl(dialect)
    checked_in = path.read_text() if path.exists() else ""
    if checked_in != generated:
        diff = "".join(
            difflib.unified_diff(
                checked_in.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                f"schema/{dialect}.sql (checked in)",
                "generated from healthmgr/db/models.py",
                n=1,
            )
        )
        pytest.fail(
            f"schema/{dialect}.sql differs from the models; regenerate it with\n"
            f"    healthmgr db ddl --dialect {dialect} > schema/{dialect}.sql\n"
            f"and commit it.\n{diff[:4000]}",
            pytrace=False,
        )


@pytest.mark.parametrize("dialect", sorted(migrate.DDL_DIALECTS))
def test_ddl_is_deterministic_and_complete(dialect: str) -> None:
    text = migrate.ddl(dialect)
    assert text == migrate.ddl(dialect)
    statements = _statements(text)
    tables = [s.split()[2].strip('`"') for s in statements if s.startswith("CREATE TABLE")]
    assert tables == [t.name for t in models.metadata.sorted_tables]
    indexes = {s.split()[2] for s in statements if s.startswith("CREATE INDEX")}
    assert indexes == {str(i.name) for t in models.metadata.tables.values() for i in t.indexes}
    for table in models.metadata.tables.values():
        for ck in ("provisioning_status", "operating_status"):
            if ck in table.c:
                assert f"CONSTRAINT ck_{table.name}_{ck} CHECK" in text
    assert all(block.endswith(";") for block in text.strip().split("\n\n")[1:])


def _statements(text: str) -> list[str]:
    """The statements of a schema/*.sql file (comment lines dropped, ';' stripped)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def test_checked_in_ddl_builds_the_models_schema(db_url: str) -> None:
    """What the API side would do: run schema/<dialect>.sql on an empty database, then stamp."""
    dialect = make_url(db_url).get_backend_name()
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in _statements((SCHEMA_DIR / f"{dialect}.sql").read_text()):
                conn.exec_driver_sql(statement)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, models.metadata) == []
            if dialect == "postgresql":  # autogenerate does not compare these
                tables = list(models.metadata.tables)
                assert database_storage(conn, tables) == model_storage()
        with pytest.raises(migrate.SchemaUnversioned):
            migrate.check_current(engine)
        migrate.stamp(engine, migrate.head())
        assert migrate.check_current(engine) == migrate.head()
    finally:
        engine.dispose()

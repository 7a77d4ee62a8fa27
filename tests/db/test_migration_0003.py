"""Revision 0003: heap-only updates of the rows every flush updates.

The ``(busy, last_update)`` index of ``amphora_health`` goes on every database;
on PostgreSQL the three tables a flush updates get fill factor 70, and a bump
of ``last_update`` is then a heap-only (HOT) update.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import sqlalchemy as sa

from healthmgr.db import migrate, models
from healthmgr.db.engine import make_engine
from healthmgr.db.flush import statements as _w
from healthmgr.rules.batch import HealthBump
from tests.db.storage import database_storage, model_storage

INDEX = "ix_amphora_health_busy_last_update"
HOT_TABLES = ["amphora_health", "healthmgr_amphora", "listener_statistics"]
T0 = dt.datetime(2026, 12, 1, 12, 0, 0, 123456)

_health = models.metadata.tables["amphora_health"]
_report = models.metadata.tables["healthmgr_amphora"]
_stats = models.metadata.tables["listener_statistics"]


def _rows(count: int) -> dict[str, list[dict[str, object]]]:
    ids = [str(uuid.UUID(int=i + 1)) for i in range(count)]
    return {
        "amphora_health": [
            {"amphora_id": a, "last_update": T0 + dt.timedelta(seconds=i), "busy": i % 3 == 0}
            for i, a in enumerate(ids)
        ],
        "healthmgr_amphora": [
            {
                "amphora_id": a,
                "report_order": 1000 + i,
                "report_digest": -(2**62) + i,
                "observed_by": "manager-a",
                "observed_at": T0,
                "healthy": i % 2 == 0,
                "native_since": None,
            }
            for i, a in enumerate(ids)
        ],
        "listener_statistics": [
            {
                "listener_id": str(uuid.UUID(int=10_000 + i)),
                "amphora_id": a,
                "bytes_in": 2**63 - 1 - i,
                "bytes_out": i,
                "active_connections": 0,
                "total_connections": 7,
                "request_errors": 0,
                "counters_epoch": 3,
                "last_seq": 99,
                "last_bytes_in": 5,
                "last_bytes_out": 6,
                "last_total_connections": 7,
                "last_request_errors": 0,
                "updated_at": T0,
            }
            for i, a in enumerate(ids)
        ],
    }


def _read(engine: sa.Engine) -> dict[str, list[dict[str, object]]]:
    out = {}
    with engine.connect() as conn:
        for name in HOT_TABLES:
            table = models.metadata.tables[name]
            key = [c for c in table.primary_key.columns]
            rows = conn.execute(sa.select(table).order_by(*key)).mappings().all()
            out[name] = [
                {k: v for k, v in dict(r).items() if k in {c.name for c in table.columns}}
                for r in rows
            ]
    return out


def _indexes(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(i["name"]) for i in sa.inspect(conn).get_indexes("amphora_health")}


def _storage(engine: sa.Engine) -> dict[str, dict[str, str]]:
    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as conn:
        return database_storage(conn, list(models.metadata.tables))


def test_upgrade_from_0002_keeps_the_rows_and_downgrade_restores_the_index(db_url: str) -> None:
    assert migrate.upgrade(db_url, "0002") == (None, "0002")
    engine = make_engine(db_url)
    try:
        rows = _rows(25)
        with engine.begin() as conn:
            for name in HOT_TABLES:
                conn.execute(sa.insert(models.metadata.tables[name]), rows[name])
        before = _read(engine)
        assert before == {name: rows[name] for name in HOT_TABLES}
        assert INDEX in _indexes(engine)
        assert _storage(engine) == {}

        assert migrate.upgrade(db_url) == ("0002", "0003")
        assert _read(engine) == before
        assert INDEX not in _indexes(engine)
        hot = {t: {"fillfactor": "70"} for t in HOT_TABLES}
        assert _storage(engine) == (hot if engine.dialect.name == "postgresql" else {})

        assert migrate.downgrade(db_url, "0002") == ("0003", "0002")
        assert _read(engine) == before
        assert INDEX in _indexes(engine)
        assert _storage(engine) == {}
        assert migrate.upgrade(db_url) == ("0002", "0003")
        assert INDEX not in _indexes(engine)
    finally:
        engine.dispose()


def test_the_models_carry_the_fill_factor_of_0003() -> None:
    assert model_storage() == {t: {"fillfactor": "70"} for t in HOT_TABLES}
    assert INDEX not in {i.name for i in _health.indexes}


@pytest.mark.postgresql
def test_migrated_storage_options_match_the_models(pg_url: str) -> None:
    """Alembic's autogenerate does not compare storage options: compare them here."""
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        assert _storage(engine) == model_storage()
    finally:
        engine.dispose()


def _hot_updates(engine: sa.Engine) -> tuple[int, int]:
    """amphora_health's (n_tup_upd, n_tup_hot_upd), as the statistics system has them."""
    with engine.connect() as conn:
        upd, hot = conn.exec_driver_sql(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'amphora_health'"
        ).one()
    return int(upd), int(hot)


def _bump_and_count(engine: sa.Engine, ids: list[bytes], at: dt.datetime) -> tuple[int, int]:
    """Bump these amphorae with the flush's own statement; the (updates,
    heap-only updates) that added to amphora_health's statistics."""
    before = _hot_updates(engine)
    _, params = _w.health_params("postgresql", [HealthBump(i, at) for i in ids])
    with engine.begin() as conn:
        conn.exec_driver_sql(_w.health_statement("postgresql").sql, params)
        # The counters reach pg_stat_user_tables when this backend flushes its
        # statistics: at once after this (PostgreSQL 15+), within about 10 s
        # of going idle otherwise.
        if conn.dialect.server_version_info >= (15,):
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 20
    while True:
        after = _hot_updates(engine)
        if after[0] - before[0] >= len(ids) or time.monotonic() > deadline:
            return after[0] - before[0], after[1] - before[1]
        time.sleep(0.1)


@pytest.mark.postgresql
def test_a_bump_of_last_update_is_a_heap_only_update_after_0003(pg_url: str) -> None:
    ids = [uuid.UUID(int=i + 1).bytes for i in range(20)]
    migrate.upgrade(pg_url, "0002")
    engine = make_engine(pg_url)
    try:
        _, params = _w.health_params("postgresql", [HealthBump(i, T0) for i in ids])
        with engine.begin() as conn:
            conn.exec_driver_sql(_w.health_statement("postgresql").sql, params)  # the inserts
        # At 0002 the bump changes an indexed column: no update is heap-only.
        assert _bump_and_count(engine, ids, T0 + dt.timedelta(seconds=1)) == (20, 0)
        migrate.upgrade(pg_url)
        assert _bump_and_count(engine, ids, T0 + dt.timedelta(seconds=2)) == (20, 20)
        with engine.connect() as conn:
            got = conn.execute(sa.select(sa.func.min(_health.c.last_update))).scalar_one()
        assert got == T0 + dt.timedelta(seconds=2)
    finally:
        engine.dispose()


def test_the_octavia_schemas_own_tables_keep_no_storage_options() -> None:
    """o001 creates healthmgr_amphora as the native 0002 did: its model copy says so."""
    from healthmgr.db import octavia_schema

    assert "healthmgr_amphora" in octavia_schema.metadata.tables
    assert model_storage(octavia_schema.metadata) == {}

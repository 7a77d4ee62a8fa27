"""``make_engine(url, timeout=T)``: the bounds each dialect's sessions really run with.

What the bounds do under faults is in tests/db/test_errors.py (lock and
statement timeouts) and tests/fault/ (silent, refusing and partitioned
servers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.config import ConfigError, load_settings
from healthmgr.db.engine import SQLITE_BUSY_TIMEOUT_MS, Bounds, make_engine

T = 2.0


@pytest.fixture
def bounded(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url, timeout=T)
    yield engine
    engine.dispose()


def _one(engine: sa.Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar_one()


def test_bounds_are_derived_from_one_timeout() -> None:
    b = Bounds(10.0)
    assert (b.statement_ms, b.lock_ms, b.lock_s) == (10_000, 5_000, 5)
    assert b.reply_s == 12.5 and b.connect_s == 5 and b.keepalive_s == 5
    small = Bounds(0.5)
    assert (small.lock_s, small.connect_s, small.keepalive_s) == (1, 2, 1)  # drivers' minimums
    assert small.reply_s == 1.5
    pg = b.postgresql()
    assert pg["options"] == (
        "-c statement_timeout=10000 -c lock_timeout=5000"
        " -c idle_in_transaction_session_timeout=20000"
    )
    assert (b.idle_in_transaction_s, small.idle_in_transaction_s) == (20, 5)
    assert pg["tcp_user_timeout"] == 10_000 and pg["keepalives"] == 1
    assert b.mysql() == {"connect_timeout": 5, "read_timeout": 12.5, "write_timeout": 12.5}
    assert "max_statement_time = 10.000" in b.mysql_session("10.11.19-MariaDB-0+deb12u1")
    assert "idle_transaction_timeout = 20" in b.mysql_session("10.11.19-MariaDB-0+deb12u1")
    assert "max_execution_time = 10000" in b.mysql_session("8.0.36")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        make_engine("sqlite://", timeout=bad)


def test_sessions_run_with_the_bounds(bounded: sa.Engine) -> None:
    dialect = bounded.dialect.name
    if dialect == "postgresql":
        assert _one(bounded, "SHOW statement_timeout") == "2s"
        assert _one(bounded, "SHOW lock_timeout") == "1s"
        assert _one(bounded, "SHOW idle_in_transaction_session_timeout") == "5s"
        with bounded.connect() as conn:
            info = conn.connection.dbapi_connection.info  # type: ignore[union-attr]
            params = info.get_parameters()
        assert params["tcp_user_timeout"] == "2000"
        assert (params["keepalives_idle"], params["keepalives_count"]) == ("1", "2")
        assert params["connect_timeout"] == "2"
    elif dialect == "mysql":
        row = _one(
            bounded,
            "SELECT CONCAT_WS(' ', @@max_statement_time,"
            " @@innodb_lock_wait_timeout, @@lock_wait_timeout, @@idle_transaction_timeout)",
        )
        assert row == "2.000000 1 1 5"
        assert "STRICT_ALL_TABLES" in str(_one(bounded, "SELECT @@SESSION.sql_mode"))
    else:
        assert _one(bounded, "PRAGMA busy_timeout") == 2000
    assert bounded.pool.timeout() == T  # type: ignore[attr-defined]


def test_without_a_timeout_sessions_are_as_before(db_url: str) -> None:
    """Migrations and the CLI: no statement bound (a long DDL must not be cancelled)."""
    engine = make_engine(db_url)
    try:
        dialect = engine.dialect.name
        if dialect == "postgresql":
            assert _one(engine, "SHOW statement_timeout") == "0"
        elif dialect == "mysql":
            assert float(str(_one(engine, "SELECT @@max_statement_time"))) == 0
            assert "STRICT_ALL_TABLES" in str(_one(engine, "SELECT @@SESSION.sql_mode"))
        else:
            assert _one(engine, "PRAGMA busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_an_option_in_the_url_wins(server_db_url: str, tmp_path: Path) -> None:
    if server_db_url.startswith("postgresql"):
        url = server_db_url + "?options=-c%20statement_timeout%3D7000&connect_timeout=9"
        engine = make_engine(url, timeout=T)
        assert _one(engine, "SHOW statement_timeout") == "7s"
        assert _one(engine, "SHOW lock_timeout") == "1s"  # ours, where the URL says nothing
        with engine.connect() as conn:
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert params["connect_timeout"] == "9"
    else:
        engine = make_engine(server_db_url + "?read_timeout=30", timeout=T)
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection._read_timeout == 30  # type: ignore[union-attr]
    engine.dispose()
    sqlite = make_engine(f"sqlite:///{tmp_path / 'u.db'}?timeout=7", timeout=T)
    assert _one(sqlite, "PRAGMA busy_timeout") == 7000
    sqlite.dispose()


def test_database_timeout_option(tmp_path: Path) -> None:
    assert load_settings(env={}).database.timeout == 10.0
    path = tmp_path / "hm.toml"
    path.write_text("[database]\ntimeout = 2.5\n")
    assert load_settings(path, env={}).database.timeout == 2.5
    env = {"HEALTHMGR_DATABASE__TIMEOUT": "4"}
    assert load_settings(path, env=env).database.timeout == 4.0
    path.write_text("[database]\ntimeout = 0\n")
    with pytest.raises(ConfigError, match=r"database\.timeout"):
        load_settings(path, env={})

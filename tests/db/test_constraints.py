"""What the database itself enforces, on every dialect, and how engines are set up."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, exc, insert, select, update
from sqlalchemy.engine import make_url

from healthmgr.db import migrate
from healthmgr.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    BadDatabaseURL,
    DatabaseUnavailable,
    connect,
    describe,
    make_engine,
    normalize_url,
    ping,
)
from healthmgr.db.models import Amphora, FailoverRequest, Listener, LoadBalancer, Member, Pool
from healthmgr.rules import constants as C

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, 123456)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate.upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _id() -> str:
    return str(uuid.uuid4())


def _lb(**over: Any) -> dict[str, Any]:
    row = dict(
        id=_id(),
        provisioning_status=C.ACTIVE,
        operating_status=C.ONLINE,
        enabled=True,
        topology=C.SINGLE,
    )
    return row | over


def _insert(engine: Engine, table: Table, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(table).values(**row))


def _rejected(engine: Engine, table: Table, row: dict[str, Any], constraint: str) -> None:
    # PostgreSQL and SQLite raise IntegrityError; MariaDB's CHECK error (4025)
    # reaches PyMySQL as another DBAPI error class. Every one names the constraint.
    with pytest.raises(exc.DBAPIError) as err:
        _insert(engine, table, row)
    assert constraint in str(err.value.orig) or engine.dialect.name == "sqlite"
    if engine.dialect.name == "sqlite":
        assert "CHECK constraint failed" in str(err.value.orig)


def _lb_with_pool(engine: Engine) -> tuple[str, str]:
    lb, pool = _lb(), _id()
    _insert(engine, LoadBalancer, lb)
    _insert(
        engine,
        Pool,
        dict(
            id=pool,
            load_balancer_id=lb["id"],
            protocol="HTTP",
            lb_algorithm="ROUND_ROBIN",
            enabled=True,
            provisioning_status=C.ACTIVE,
            operating_status=C.ONLINE,
        ),
    )
    return lb["id"], pool


def test_every_status_of_the_vocabularies_is_accepted(engine: Engine) -> None:
    for status in C.OPERATING_STATUSES:
        _insert(engine, LoadBalancer, _lb(operating_status=status))
    for status in C.PROVISIONING_STATUSES:
        _insert(engine, LoadBalancer, _lb(provisioning_status=status, topology=None))
    for status in C.AMPHORA_STATUSES:
        _insert(engine, Amphora, dict(id=_id(), status=status, role=None))


def test_bad_operating_status_is_rejected(engine: Engine) -> None:
    _rejected(engine, LoadBalancer, _lb(operating_status="UP"), "ck_load_balancer_operating_status")
    _lb_id, pool = _lb_with_pool(engine)
    member = dict(
        id=_id(),
        pool_id=pool,
        ip_address="192.0.2.10",
        protocol_port=80,
        weight=1,
        enabled=True,
        provisioning_status=C.ACTIVE,
        operating_status="online",  # the vocabulary is upper case
    )
    _rejected(engine, Member, member, "ck_member_operating_status")


def test_bad_provisioning_status_is_rejected(engine: Engine) -> None:
    _rejected(
        engine,
        LoadBalancer,
        _lb(provisioning_status="PENDING"),
        "ck_load_balancer_provisioning_status",
    )
    lb, _pool = _lb_with_pool(engine)
    listener = dict(
        id=_id(),
        load_balancer_id=lb,
        protocol="HTTP",
        protocol_port=80,
        enabled=True,
        provisioning_status="BUILDING",
        operating_status=C.ONLINE,
    )
    _rejected(engine, Listener, listener, "ck_listener_provisioning_status")


def test_bad_amphora_status_role_topology_and_failover_state_are_rejected(engine: Engine) -> None:
    _rejected(engine, Amphora, dict(id=_id(), status="RUNNING"), "ck_amphora_status")
    _rejected(engine, Amphora, dict(id=_id(), status=C.READY, role="LEADER"), "ck_amphora_role")
    _rejected(engine, LoadBalancer, _lb(topology="ACTIVE_ACTIVE"), "ck_load_balancer_topology")
    request = dict(
        amphora_id=_id(),
        reason="stale",
        requested_by="hm-1",
        requested_at=NOW,
        state="DONE",
        attempts=0,
    )
    _rejected(engine, FailoverRequest, request, "ck_failover_request_state")


def test_an_update_to_a_bad_status_is_rejected_too(engine: Engine) -> None:
    lb = _lb()
    _insert(engine, LoadBalancer, lb)
    with pytest.raises(exc.DBAPIError), engine.begin() as conn:
        conn.execute(
            update(LoadBalancer).where(LoadBalancer.c.id == lb["id"]).values(operating_status="BAD")
        )
    with engine.connect() as conn:
        stored = conn.scalar(
            select(LoadBalancer.c.operating_status).where(LoadBalancer.c.id == lb["id"])
        )
    assert stored == C.ONLINE


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(exc.IntegrityError):
        _insert(engine, Amphora, dict(id=_id(), status=C.ALLOCATED, load_balancer_id=_id()))


def test_datetimes_keep_microseconds(engine: Engine) -> None:
    _insert(
        engine,
        FailoverRequest,
        dict(
            amphora_id=_id(),
            reason="stale",
            requested_by="hm-1",
            requested_at=NOW,
            state=C.FAILOVER_PENDING,
            attempts=0,
        ),
    )
    with engine.connect() as conn:
        assert conn.scalar(select(FailoverRequest.c.requested_at)) == NOW


# -- engines -----------------------------------------------------------------


def test_sqlite_pragmas_are_set_on_every_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hm.db'}", pool_size=2)
    try:
        for _ in range(3):  # several pooled connections, each configured
            with connect(engine) as conn:
                pragma = conn.exec_driver_sql
                assert pragma("PRAGMA journal_mode").scalar() == "wal"
                assert pragma("PRAGMA foreign_keys").scalar() == 1
                assert pragma("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
                assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        engine.dispose()


def test_sqlite_transactions_are_real(tmp_path: Path) -> None:
    """SQLAlchemy emits BEGIN: DDL and SELECTs are inside the transaction."""
    engine = make_engine(f"sqlite:///{tmp_path / 'tx.db'}")
    try:
        with connect(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.rollback()
            assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar() == 0
        with connect(engine).execution_options(sqlite_begin="IMMEDIATE") as writer:
            writer.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            # BEGIN IMMEDIATE holds the write lock: another writer cannot start.
            other = make_engine(f"sqlite:///{tmp_path / 'tx.db'}")
            other_conn = connect(other)
            other_conn.exec_driver_sql("PRAGMA busy_timeout=0")
            other_conn.rollback()
            other_conn.execution_options(sqlite_begin="IMMEDIATE")
            with pytest.raises(exc.OperationalError, match="locked"):
                other_conn.begin()
            other_conn.close()
            other.dispose()
            writer.commit()
    finally:
        engine.dispose()


def test_sqlite_relative_path_creates_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite:///var/lib/hm/healthmgr.db")
    ping(engine)
    engine.dispose()
    assert (tmp_path / "var/lib/hm/healthmgr.db").is_file()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("mysql://u@h/db", "mysql+pymysql"),
        ("mariadb://u@h/db", "mysql+pymysql"),
        ("mysql+pymysql://u@h/db", "mysql+pymysql"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_urls_are_pointed_at_the_supported_drivers(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


def test_mysql_urls_default_to_utf8mb4() -> None:
    assert normalize_url("mysql://u@h/db").query["charset"] == "utf8mb4"
    assert normalize_url("mysql://u@h/db?charset=utf8").query["charset"] == "utf8"


@pytest.mark.parametrize("url", ["oracle://u@h/db", "postgresql+psycopg2://u@h/db", "nonsense"])
def test_unsupported_urls_are_named(url: str) -> None:
    with pytest.raises(BadDatabaseURL):
        normalize_url(url)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://hm:s3cret@127.0.0.1:1/hm", "PostgreSQL at 127.0.0.1:1/hm"),
        ("mysql://hm:s3cret@127.0.0.1:1/hm", "MariaDB/MySQL at 127.0.0.1:1/hm"),
    ],
)
def test_unreachable_server_is_one_line_naming_host_and_port(url: str, where: str) -> None:
    engine = make_engine(url)
    with pytest.raises(DatabaseUnavailable) as err:
        ping(engine)
    message = str(err.value)
    assert message.startswith(f"cannot reach the database ({where}): ")
    assert "\n" not in message
    assert "s3cret" not in message


def test_unopenable_sqlite_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # not a directory, even for root
    target = tmp_path / "file" / "sub" / "hm.db"
    with pytest.raises(DatabaseUnavailable, match=re.escape(f"directory {target.parent} ")):
        make_engine(f"sqlite:///{target}")
    with pytest.raises(DatabaseUnavailable, match=re.escape(f"(SQLite file {tmp_path})")):
        ping(make_engine(f"sqlite:///{tmp_path}"))  # a directory is no database file


def test_describe_never_shows_the_password() -> None:
    assert (
        describe("mysql+pymysql://u:pw@db.example:3307/hm") == "MariaDB/MySQL at db.example:3307/hm"
    )
    assert describe(make_url("sqlite:///rel/hm.db")) == "SQLite file rel/hm.db"

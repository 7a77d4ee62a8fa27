"""Error classes (healthmgr.db.errors), each provoked for real on SQLite, PostgreSQL and MariaDB.

Refused data is provoked with the models' own columns and constraints; lock
waits with a row lock held by a second session; statement timeouts with
pg_sleep()/SLEEP(); lost connections by killing the session. Refused and
silent servers through the fault relay are in tests/fault/test_db_bounds.py.
Codes that cannot be provoked here without reconfiguring the shared servers
(too many connections, shutdown, read-only) are checked on the drivers' own
exception classes at the end.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from healthmgr.db import models
from healthmgr.db.engine import Bounds, DatabaseUnavailable, make_engine, ping
from healthmgr.db.errors import (
    Diagnosis,
    ErrorClass,
    classify,
    diagnose,
    is_refused,
    is_transient,
)
from healthmgr.db.models import Amphora, AmphoraHealth, ListenerStatistics, LoadBalancer
from healthmgr.rules import constants as C

T = 2.0  # [database] timeout of the engines under test
BIG = 2**63  # one past BIGINT's maximum
CONNECTION, CONTENTION, REFUSED = (
    ErrorClass.CONNECTION,
    ErrorClass.CONTENTION,
    ErrorClass.REFUSED_DATA,
)


def _with_tables(url: str) -> Iterator[sa.Engine]:
    eng = make_engine(url, timeout=T)
    models.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    yield from _with_tables(db_url)


@pytest.fixture
def server_engine(server_db_url: str) -> Iterator[sa.Engine]:
    yield from _with_tables(server_db_url)


def _id() -> str:
    return str(uuid.uuid4())


def _raised(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except Exception as e:
        return e
    pytest.fail("the database accepted it")


def _write(engine: sa.Engine, stmt: Any, params: Any = None) -> Callable[[], None]:
    def run() -> None:
        with engine.begin() as conn:
            conn.execute(stmt, params) if params is not None else conn.execute(stmt)

    return run


def _lb(**over: Any) -> sa.Insert:
    row = (
        dict(id=_id(), provisioning_status=C.ACTIVE, operating_status=C.ONLINE, enabled=True) | over
    )
    return sa.insert(LoadBalancer).values(**row)


def _stats(**over: Any) -> sa.Insert:
    return sa.insert(ListenerStatistics).values(dict(listener_id=_id(), amphora_id=_id()) | over)


def _expect(
    error: BaseException, error_class: ErrorClass, reason: str, codes: dict[str, str], dialect: str
) -> Diagnosis:
    found = diagnose(error)
    print(f"\n{dialect}: {found} <- {type(error).__name__}: {str(error).splitlines()[0][:120]}")
    assert (found.error_class, found.reason) == (error_class, reason)
    if dialect in codes:
        assert found.code == codes[dialect]
    return found


# -- refused data -------------------------------------------------------------------------


def test_a_counter_beyond_bigint_is_out_of_range(engine: sa.Engine) -> None:
    error = _raised(_write(engine, _stats(bytes_in=BIG)))
    # SQLite's driver cannot even bind it (OverflowError): no code.
    _expect(
        error,
        REFUSED,
        "out_of_range",
        {"postgresql": "22003", "mysql": "1264"},
        engine.dialect.name,
    )
    assert is_refused(error) and not is_transient(error)


def test_bigint_arithmetic_overflow_is_out_of_range(server_engine: sa.Engine) -> None:
    _write(server_engine, _stats(listener_id="l", amphora_id="a", bytes_in=BIG - 1))()
    add = sa.update(ListenerStatistics).values(bytes_in=ListenerStatistics.c.bytes_in + 1)
    error = _raised(_write(server_engine, add))
    _expect(
        error,
        REFUSED,
        "out_of_range",
        {"postgresql": "22003", "mysql": "1690"},
        server_engine.dialect.name,
    )


def test_sqlite_integer_overflow_is_out_of_range(tmp_path: Path) -> None:
    # SQLite turns an overflowing + into a float silently; sum() raises.
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}", timeout=T)
    models.metadata.create_all(engine)
    _write(engine, _stats(bytes_in=BIG - 1))()
    _write(engine, _stats(bytes_in=1))()
    with engine.connect() as conn:
        error = _raised(lambda: conn.execute(sa.select(sa.func.sum(ListenerStatistics.c.bytes_in))))
    _expect(error, REFUSED, "out_of_range", {"sqlite": "SQLITE_ERROR"}, "sqlite")


def test_a_check_constraint_is_refused(engine: sa.Engine) -> None:
    error = _raised(_write(engine, _lb(provisioning_status="EXPLODED")))
    codes = {"postgresql": "23514", "mysql": "4025", "sqlite": "SQLITE_CONSTRAINT_CHECK"}
    _expect(error, REFUSED, "constraint", codes, engine.dialect.name)


def test_a_foreign_key_is_refused(engine: sa.Engine) -> None:
    orphan = sa.insert(Amphora).values(id=_id(), status=C.ALLOCATED, load_balancer_id=_id())
    error = _raised(_write(engine, orphan))
    codes = {"postgresql": "23503", "mysql": "1452", "sqlite": "SQLITE_CONSTRAINT_FOREIGNKEY"}
    _expect(error, REFUSED, "constraint", codes, engine.dialect.name)


def test_not_null_and_duplicates_are_refused(engine: sa.Engine) -> None:
    error = _raised(_write(engine, _lb(operating_status=None)))
    codes = {"postgresql": "23502", "mysql": "1048", "sqlite": "SQLITE_CONSTRAINT_NOTNULL"}
    _expect(error, REFUSED, "constraint", codes, engine.dialect.name)
    same = _id()
    _write(engine, _lb(id=same))()
    error = _raised(_write(engine, _lb(id=same)))
    codes = {"postgresql": "23505", "mysql": "1062", "sqlite": "SQLITE_CONSTRAINT_PRIMARYKEY"}
    _expect(error, REFUSED, "constraint", codes, engine.dialect.name)


def test_a_string_too_long_is_refused(server_engine: sa.Engine) -> None:
    # SQLite does not enforce VARCHAR lengths: it stores the string.
    error = _raised(_write(server_engine, _lb(name="x" * 300)))
    _expect(
        error,
        REFUSED,
        "too_long",
        {"postgresql": "22001", "mysql": "1406"},
        server_engine.dialect.name,
    )


def test_text_that_cannot_be_encoded_is_refused(engine: sa.Engine) -> None:
    # A lone surrogate: no driver can encode it as UTF-8.
    error = _raised(_write(engine, _lb(name="\ud800")))
    _expect(error, REFUSED, "encoding", {}, engine.dialect.name)


def test_bytes_that_are_not_the_column_encoding_are_refused(server_engine: sa.Engine) -> None:
    dialect = server_engine.dialect.name
    if dialect == "mysql":
        error = _raised(_write(server_engine, _lb(name=b"\xff\xfe")))
    else:
        invalid = sa.text("SELECT convert_from('\\xff'::bytea, 'UTF8')")
        error = _raised(_write(server_engine, invalid))
    _expect(error, REFUSED, "encoding", {"postgresql": "22021", "mysql": "1366"}, dialect)
    if dialect == "postgresql":  # text cannot hold NUL: psycopg refuses before sending
        error = _raised(_write(server_engine, _lb(name="a\x00b")))
        _expect(error, REFUSED, "encoding", {}, dialect)


def test_a_value_of_the_wrong_type_is_refused(engine: sa.Engine) -> None:
    dialect = engine.dialect.name
    columns = "(id, amphora_id, reason, requested_by, requested_at, state, attempts)"
    values = {
        # SQLite: a non-integer rowid ("datatype mismatch").
        "sqlite": "('abc', 'a', 'r', 'm', '2026-01-01', 'PENDING', 0)",
        "mysql": "(1, 'a', 'r', 'm', '2026-01-01', 'PENDING', 'abc')",
        "postgresql": "(1, 'a', 'r', 'm', '2026-01-01', 'PENDING', 'abc')",
    }[dialect]
    insert = sa.text(f"INSERT INTO failover_request {columns} VALUES {values}")
    error = _raised(_write(engine, insert))
    codes = {"postgresql": "22P02", "mysql": "1366", "sqlite": "SQLITE_MISMATCH"}
    _expect(error, REFUSED, "invalid_value", codes, dialect)


# -- contention ---------------------------------------------------------------------------


def _hold_row_lock(url: str, amphora_id: str) -> tuple[sa.Engine, sa.Connection]:
    """A second session holding a row lock (SQLite: the write lock) until rolled back."""
    holder = make_engine(url)
    conn = holder.connect()
    if holder.dialect.name == "sqlite":
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        conn.begin()
    else:
        conn.begin()
        row = sa.select(AmphoraHealth).where(AmphoraHealth.c.amphora_id == amphora_id)
        conn.execute(row.with_for_update()).one()
    return holder, conn


def test_a_held_row_lock_fails_an_update_after_the_lock_timeout(
    engine: sa.Engine, db_url: str
) -> None:
    amphora = _id()
    now = sa.func.current_timestamp()
    _write(engine, sa.insert(AmphoraHealth).values(amphora_id=amphora, last_update=now))()
    holder, held = _hold_row_lock(db_url, amphora)
    bump = sa.update(AmphoraHealth).where(AmphoraHealth.c.amphora_id == amphora).values(busy=True)
    try:
        start = time.monotonic()
        error = _raised(_write(engine, bump))
        waited = time.monotonic() - start
    finally:
        held.rollback()
        held.close()
        holder.dispose()
    dialect = engine.dialect.name
    codes = {"postgresql": "55P03", "mysql": "1205", "sqlite": "SQLITE_BUSY"}
    _expect(error, CONTENTION, "lock_timeout", codes, dialect)
    print(f"{dialect}: gave up on the lock after {waited:.2f} s")
    bounds = Bounds(T)
    lock_wait = {"postgresql": bounds.lock_ms / 1000, "mysql": bounds.lock_s}
    assert waited >= 0.9 * lock_wait.get(dialect, bounds.statement_ms / 1000)  # it did wait
    assert is_transient(error)
    _write(engine, bump)()  # the lock is gone: the same engine writes


def test_a_long_statement_is_cancelled_at_the_timeout(server_engine: sa.Engine) -> None:
    dialect = server_engine.dialect.name
    sleep = {"postgresql": "SELECT pg_sleep(30)", "mysql": "SELECT SLEEP(30)"}[dialect]
    with server_engine.connect() as conn:
        error = _raised(lambda: conn.exec_driver_sql(sleep))
        conn.rollback()
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1  # the session survives
    _expect(
        error, CONTENTION, "statement_timeout", {"postgresql": "57014", "mysql": "1969"}, dialect
    )


def test_a_deadlock_is_contention(server_db_url: str) -> None:
    # Lock waits of 2 s: PostgreSQL's deadlock check (deadlock_timeout, 1 s) comes first.
    engine = make_engine(server_db_url, timeout=4.0)
    models.metadata.create_all(engine)
    a, b = _id(), _id()
    now = sa.func.current_timestamp()
    for amphora in (a, b):
        _write(engine, sa.insert(AmphoraHealth).values(amphora_id=amphora, last_update=now))()

    def bump(amphora: str) -> sa.Update:
        return (
            sa.update(AmphoraHealth).where(AmphoraHealth.c.amphora_id == amphora).values(busy=True)
        )

    errors: list[BaseException] = []
    first, second = engine.connect(), engine.connect()
    first.begin()
    second.begin()
    first.execute(bump(a))
    second.execute(bump(b))

    def cross(conn: sa.Connection, amphora: str) -> None:
        try:
            conn.execute(bump(amphora))
        except exc.DBAPIError as e:
            errors.append(e)
        finally:
            conn.rollback()

    thread = threading.Thread(target=cross, args=(first, b))
    thread.start()
    time.sleep(0.2)  # first waits for b
    cross(second, a)  # second waits for a: a cycle
    thread.join(10)
    first.close()
    second.close()
    engine.dispose()
    assert errors, "no deadlock was reported"
    codes = {"postgresql": "40P01", "mysql": "1213"}
    _expect(errors[0], CONTENTION, "deadlock", codes, engine.dialect.name)


def test_a_serialization_failure_is_contention(pg_url: str) -> None:
    engine = make_engine(pg_url, timeout=T)
    models.metadata.create_all(engine)
    amphora = _id()
    now = sa.func.current_timestamp()
    _write(engine, sa.insert(AmphoraHealth).values(amphora_id=amphora, last_update=now))()
    row = sa.select(AmphoraHealth.c.busy).where(AmphoraHealth.c.amphora_id == amphora)
    bump = sa.update(AmphoraHealth).where(AmphoraHealth.c.amphora_id == amphora).values(busy=True)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as snapshot:
        snapshot.begin()
        snapshot.execute(row).one()
        _write(engine, bump)()  # committed by another transaction since the snapshot
        error = _raised(lambda: snapshot.execute(bump))
        snapshot.rollback()
    engine.dispose()
    _expect(error, CONTENTION, "serialization", {"postgresql": "40001"}, "postgresql")


# -- connection ----------------------------------------------------------------------------


def test_a_killed_session_is_a_connection_error_and_the_pool_recovers(
    server_engine: sa.Engine, server_db_url: str
) -> None:
    dialect = server_engine.dialect.name
    conn = server_engine.connect()
    own = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}[dialect]
    session = conn.exec_driver_sql(own).scalar_one()
    conn.commit()
    killer = make_engine(server_db_url)
    with killer.begin() as k:
        if dialect == "postgresql":
            k.exec_driver_sql(f"SELECT pg_terminate_backend({int(session)})")
        else:
            k.exec_driver_sql(f"KILL {int(session)}")
    killer.dispose()
    time.sleep(0.2)
    error = _raised(lambda: conn.exec_driver_sql("SELECT 1"))
    conn.close()
    found = diagnose(error)
    print(f"\n{dialect}: killed session: {found}: {str(error).splitlines()[0][:120]}")
    assert found.error_class is CONNECTION and is_transient(error)
    with server_engine.connect() as again:
        assert again.exec_driver_sql("SELECT 1").scalar_one() == 1


def test_an_sqlite_file_that_cannot_be_opened_is_a_connection_error(tmp_path: Path) -> None:
    error = _raised(lambda: ping(make_engine(f"sqlite:///{tmp_path}", timeout=T)))  # a directory
    assert isinstance(error, DatabaseUnavailable)
    assert diagnose(error) == Diagnosis(CONNECTION, "unreachable", "SQLITE_CANTOPEN")


# -- codes that are not provoked here --------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            psycopg.errors.TooManyConnections("sorry, too many clients"),
            (CONNECTION, "too_many_connections"),
        ),
        (psycopg.errors.AdminShutdown("terminating connection"), (CONNECTION, "shutdown")),
        (
            psycopg.errors.CannotConnectNow("the database system is starting up"),
            (CONNECTION, "shutdown"),
        ),
        (psycopg.errors.ReadOnlySqlTransaction("read-only"), (CONNECTION, "read_only")),
        (psycopg.errors.DiskFull("could not extend file"), (CONNECTION, "resources")),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), (CONTENTION, "lock_timeout")),
        (psycopg.errors.UndefinedTable("relation does not exist"), (ErrorClass.UNKNOWN, "unknown")),
        (
            psycopg.OperationalError("connection failed: ... Connection refused"),
            (CONNECTION, "unreachable"),
        ),
        (
            psycopg.OperationalError("server closed the connection unexpectedly"),
            (CONNECTION, "lost"),
        ),
        (
            pymysql.err.OperationalError(1040, "Too many connections"),
            (CONNECTION, "too_many_connections"),
        ),
        (pymysql.err.OperationalError(2006, "MySQL server has gone away"), (CONNECTION, "lost")),
        (
            pymysql.err.OperationalError(1053, "Server shutdown in progress"),
            (CONNECTION, "shutdown"),
        ),
        (pymysql.err.OperationalError(1290, "--read-only"), (CONNECTION, "read_only")),
        (pymysql.err.OperationalError(2003, "Can't connect (timed out)"), (CONNECTION, "timeout")),
        (pymysql.err.InterfaceError(0, ""), (CONNECTION, "lost")),
        (
            pymysql.err.OperationalError(1020, "Record has changed since last read"),
            (CONTENTION, "serialization"),
        ),
        (pymysql.err.IntegrityError(3819, "Check constraint is violated"), (REFUSED, "constraint")),
        (
            pymysql.err.ProgrammingError(1146, "Table doesn't exist"),
            (ErrorClass.UNKNOWN, "unknown"),
        ),
        (sqlite3.OperationalError("database is locked"), (CONTENTION, "lock_timeout")),
        (
            exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
            (CONNECTION, "pool_timeout"),
        ),
        (ConnectionResetError(104, "Connection reset by peer"), (CONNECTION, "lost")),
        (ValueError("not a database error"), (ErrorClass.UNKNOWN, "unknown")),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_codes_of_each_driver(error: BaseException, expected: tuple[ErrorClass, str]) -> None:
    assert (diagnose(error).error_class, diagnose(error).reason) == expected
    assert classify(error) is expected[0]
    wrapped = exc.OperationalError("SELECT 1", {}, error)  # as SQLAlchemy raises it
    assert classify(wrapped) is expected[0]


def test_an_invalidated_connection_is_a_connection_error() -> None:
    wrapped = exc.DBAPIError("SELECT 1", {}, RuntimeError("?"), connection_invalidated=True)
    assert diagnose(wrapped) == Diagnosis(CONNECTION, "lost")


def test_a_cause_is_followed() -> None:
    try:
        try:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        except psycopg.Error as inner:
            raise RuntimeError("flush failed") from inner
    except RuntimeError as outer:
        assert diagnose(outer).reason == "deadlock"

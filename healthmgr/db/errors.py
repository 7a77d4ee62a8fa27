"""What a database error means for the caller: retry, wait, or drop the data.

:func:`diagnose` reads an exception from SQLAlchemy, psycopg, PyMySQL or
sqlite3 (wrapped or not) and answers with an :class:`ErrorClass` and a short
``reason`` for metric labels and log lines:

========================  =====================================================
``CONNECTION``            the database cannot serve us now: unreachable,
                          refused, reset, timed out, gone away, shut down, too
                          many connections, out of resources, read-only
                          standby. Retry later; the database is impaired.
``CONTENTION``            deadlock, serialization failure, lock wait timeout,
                          statement timeout or cancel. Run the transaction
                          again.
``REFUSED_DATA``          the database refuses these values, now and for
                          ever: out of range, other data exceptions, encoding,
                          too long, constraint violations. Never retry the
                          same rows; isolate them.
``UNKNOWN``               anything else (a bug, a schema problem).
========================  =====================================================

The codes are PostgreSQL's SQLSTATE, MariaDB/MySQL's error numbers and
SQLite's result-code names (``sqlite_errorname``, Python 3.11+), with SQLite's
messages where it has no code of its own ("integer overflow"). Pure: reads
attributes of the exception, imports no driver.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

from healthmgr.db.engine import DatabaseUnavailable

__all__ = [
    "DATABASE_ERRORS",
    "Diagnosis",
    "ErrorClass",
    "classify",
    "diagnose",
    "is_refused",
    "is_transient",
]


# What a database call raises when the database (or the way to it) fails, not
# the code: the writer keeps such a batch and retries it; anything else is a bug.
DATABASE_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)


class ErrorClass(enum.StrEnum):
    CONNECTION = "connection"
    CONTENTION = "contention"
    REFUSED_DATA = "refused_data"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The class of an error, a short reason (a metric label) and the code it came from."""

    error_class: ErrorClass
    reason: str
    code: str = ""

    @property
    def transient(self) -> bool:
        return self.error_class in (ErrorClass.CONNECTION, ErrorClass.CONTENTION)


CONN, CONT, DATA = ErrorClass.CONNECTION, ErrorClass.CONTENTION, ErrorClass.REFUSED_DATA
UNKNOWN = Diagnosis(ErrorClass.UNKNOWN, "unknown")

# PostgreSQL SQLSTATEs: exact codes first, then the two-character class.
_PG_CODES: dict[str, tuple[ErrorClass, str]] = {
    "40001": (CONT, "serialization"),
    "40P01": (CONT, "deadlock"),
    "55P03": (CONT, "lock_timeout"),  # lock_not_available (lock_timeout, NOWAIT)
    "57014": (CONT, "statement_timeout"),  # query_canceled (statement_timeout, cancel)
    "57P01": (CONN, "shutdown"),  # admin_shutdown
    "57P02": (CONN, "shutdown"),  # crash_shutdown
    "57P03": (CONN, "shutdown"),  # cannot_connect_now (starting up, recovery)
    "57P05": (CONN, "lost"),  # idle_session_timeout
    "25P03": (CONN, "lost"),  # idle_in_transaction_session_timeout
    "25006": (CONN, "read_only"),  # read_only_sql_transaction: a standby
    "53300": (CONN, "too_many_connections"),
    "22003": (DATA, "out_of_range"),  # numeric_value_out_of_range
    "22008": (DATA, "out_of_range"),  # datetime_field_overflow
    "22001": (DATA, "too_long"),  # string_data_right_truncation
    "22021": (DATA, "encoding"),  # character_not_in_repertoire
    "22P05": (DATA, "encoding"),  # untranslatable_character
}
_PG_CLASSES: dict[str, tuple[ErrorClass, str]] = {
    "08": (CONN, "lost"),  # connection_exception
    "53": (CONN, "resources"),  # insufficient_resources: disk full, out of memory
    "58": (CONN, "resources"),  # system_error: I/O error
    "22": (DATA, "invalid_value"),  # data_exception
    "23": (DATA, "constraint"),  # integrity_constraint_violation: check, FK, not null, unique
}

# MariaDB/MySQL error numbers (server errors and the client library's 2xxx).
_MYSQL_CODES: dict[int, tuple[ErrorClass, str]] = {
    2002: (CONN, "unreachable"),  # can't connect through socket
    2003: (CONN, "unreachable"),  # can't connect to server (refused, timed out)
    2005: (CONN, "unreachable"),  # unknown host
    2006: (CONN, "lost"),  # server has gone away
    2013: (CONN, "lost"),  # lost connection during query (read_timeout: "timed out")
    2055: (CONN, "lost"),  # lost connection at ..., system error
    1040: (CONN, "too_many_connections"),
    1053: (CONN, "shutdown"),  # server shutdown in progress
    1927: (CONN, "lost"),  # connection was killed
    1290: (CONN, "read_only"),  # running with --read-only
    1836: (CONN, "read_only"),  # running in read-only mode
    1021: (CONN, "resources"),  # disk full
    1114: (CONN, "resources"),  # table is full
    1041: (CONN, "resources"),  # out of memory
    1205: (CONT, "lock_timeout"),  # innodb_lock_wait_timeout exceeded
    1213: (CONT, "deadlock"),  # also Galera's certification failure
    1020: (CONT, "serialization"),  # record has changed since last read
    1969: (CONT, "statement_timeout"),  # max_statement_time exceeded (MariaDB)
    3024: (CONT, "statement_timeout"),  # max_execution_time exceeded (MySQL)
    1317: (CONT, "statement_timeout"),  # query execution was interrupted (KILL QUERY)
    1264: (DATA, "out_of_range"),  # out of range value for column
    1690: (DATA, "out_of_range"),  # BIGINT value is out of range (arithmetic)
    1406: (DATA, "too_long"),  # data too long for column
    1300: (DATA, "encoding"),  # invalid utf8 character string
    1366: (DATA, "invalid_value"),  # incorrect <type> value (string: see _mysql_reason)
    1292: (DATA, "invalid_value"),  # incorrect/truncated datetime or number
    1265: (DATA, "invalid_value"),  # data truncated for column
    1367: (DATA, "invalid_value"),  # illegal value during parsing
    4025: (DATA, "constraint"),  # CHECK constraint failed (MariaDB)
    3819: (DATA, "constraint"),  # check constraint is violated (MySQL)
    1452: (DATA, "constraint"),  # FK: no parent row
    1451: (DATA, "constraint"),  # FK: row is referenced
    1216: (DATA, "constraint"),  # FK: no parent row (old)
    1217: (DATA, "constraint"),  # FK: row is referenced (old)
    1048: (DATA, "constraint"),  # column cannot be null
    1364: (DATA, "constraint"),  # field has no default value
    1062: (DATA, "constraint"),  # duplicate entry
    1586: (DATA, "constraint"),  # duplicate entry for unique key
}

# SQLite result-code names (primary code, before the first extended "_...").
_SQLITE_CODES: dict[str, tuple[ErrorClass, str]] = {
    "SQLITE_BUSY": (CONT, "lock_timeout"),  # busy_timeout expired
    "SQLITE_LOCKED": (CONT, "lock_timeout"),
    "SQLITE_INTERRUPT": (CONT, "statement_timeout"),
    "SQLITE_CONSTRAINT": (DATA, "constraint"),  # CHECK, FK, NOT NULL, UNIQUE
    "SQLITE_MISMATCH": (DATA, "invalid_value"),  # datatype mismatch
    "SQLITE_TOOBIG": (DATA, "too_long"),
    "SQLITE_RANGE": (DATA, "out_of_range"),
    "SQLITE_FULL": (CONN, "resources"),
    "SQLITE_NOMEM": (CONN, "resources"),
    "SQLITE_IOERR": (CONN, "resources"),
    "SQLITE_CANTOPEN": (CONN, "unreachable"),
    "SQLITE_READONLY": (CONN, "read_only"),
}
# Messages of SQLite errors that have only the generic code SQLITE_ERROR.
_SQLITE_MESSAGES: tuple[tuple[str, ErrorClass, str], ...] = (
    ("integer overflow", DATA, "out_of_range"),  # sum(), abs() of BIGINT values
    ("database is locked", CONT, "lock_timeout"),
    ("database table is locked", CONT, "lock_timeout"),
    ("constraint failed", DATA, "constraint"),
    ("datatype mismatch", DATA, "invalid_value"),
    ("string or blob too big", DATA, "too_long"),
)

# Errors a driver raises without a server code: the connection itself failed.
_CLIENT_CONNECTION_MESSAGES: tuple[tuple[str, str], ...] = (
    ("timeout", "timeout"),
    ("timed out", "timeout"),
    ("no reply", "timeout"),
    ("refused", "unreachable"),
    ("could not translate host name", "unreachable"),
    ("name or service not known", "unreachable"),
    ("no route to host", "unreachable"),
    ("network is unreachable", "unreachable"),
    ("too many clients", "too_many_connections"),
    ("shutting down", "shutdown"),
    ("the database system is starting up", "shutdown"),
)


def diagnose(error: BaseException) -> Diagnosis:
    """The class and reason of ``error`` (a SQLAlchemy error, a driver error, an OSError)."""
    if isinstance(error, sa_exc.TimeoutError):  # pool checkout timed out
        return Diagnosis(CONN, "pool_timeout")
    if isinstance(error, sa_exc.DisconnectionError):
        return Diagnosis(CONN, "lost")
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        found = diagnose(error.orig)
        invalidated = isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
        unknown = found.error_class is ErrorClass.UNKNOWN
        return Diagnosis(CONN, "lost") if unknown and invalidated else found
    cause = error.__cause__
    found = _by_code(error) or _python_error(error)
    if found is None and cause is not None:
        found = diagnose(cause)
    if isinstance(error, DatabaseUnavailable) and (found is None or not found.transient):
        return _connection(str(error), "unreachable")
    return found or UNKNOWN


def classify(error: BaseException) -> ErrorClass:
    """:class:`ErrorClass` of ``error``: see :func:`diagnose`."""
    return diagnose(error).error_class


def is_transient(error: BaseException) -> bool:
    """CONNECTION or CONTENTION: the same transaction may succeed later."""
    return diagnose(error).transient


def is_refused(error: BaseException) -> bool:
    """REFUSED_DATA: the database will never take these values."""
    return diagnose(error).error_class is ErrorClass.REFUSED_DATA


def _by_code(error: BaseException) -> Diagnosis | None:
    args = getattr(error, "args", ())
    if _is_pymysql(error) and args and isinstance(args[0], int):
        # Before the SQLSTATE: MariaDB's (HY000, 22007, 70100, ...) are too coarse.
        return _mysql(args[0], str(args[1]) if len(args) > 1 else "")
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return _postgresql(sqlstate)
    name = getattr(error, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return _sqlite(name, str(error))
    return _driver_without_code(error)


def _postgresql(sqlstate: str) -> Diagnosis:
    found = _PG_CODES.get(sqlstate) or _PG_CLASSES.get(sqlstate[:2])
    if found is None:
        return Diagnosis(ErrorClass.UNKNOWN, "unknown", sqlstate)
    return Diagnosis(*found, sqlstate)


def _mysql(code: int, message: str) -> Diagnosis:
    found = _MYSQL_CODES.get(code)
    if found is None:
        # PyMySQL's InterfaceError(0, "") is "the connection is already closed".
        kind = (CONN, "lost") if code == 0 else (ErrorClass.UNKNOWN, "unknown")
        return Diagnosis(*kind, str(code))
    error_class, reason = found
    if code == 1366 and "string value" in message.lower():
        reason = "encoding"  # "Incorrect string value: '\\xFF' for column ..."
    if error_class is CONN and "timed out" in message.lower():
        reason = "timeout"  # connect_timeout, read_timeout, write_timeout
    return Diagnosis(error_class, reason, str(code))


def _sqlite(name: str, message: str) -> Diagnosis:
    primary = "_".join(name.split("_")[:2])  # SQLITE_CONSTRAINT_CHECK -> SQLITE_CONSTRAINT
    found = _SQLITE_CODES.get(primary)
    if found is not None:
        return Diagnosis(*found, name)
    return _sqlite_message(message, name) or Diagnosis(ErrorClass.UNKNOWN, "unknown", name)


def _sqlite_message(message: str, code: str = "") -> Diagnosis | None:
    text = message.lower()
    for needle, error_class, reason in _SQLITE_MESSAGES:
        if needle in text:
            return Diagnosis(error_class, reason, code)
    return None


def _driver_without_code(error: BaseException) -> Diagnosis | None:
    """psycopg and PyMySQL errors raised by the client library itself."""
    mro = type(error).__mro__
    kind = {cls.__name__ for cls in mro}
    if any((cls.__module__ or "").startswith("psycopg") for cls in mro):
        if "OperationalError" in kind or "InterfaceError" in kind:
            return _connection(str(error), "lost")
        if "DataError" in kind:
            # "PostgreSQL text fields cannot contain NUL (0x00) bytes", encoding errors
            return Diagnosis(DATA, "encoding" if _is_encoding(str(error)) else "invalid_value")
    if (type(error).__module__ or "") in ("sqlite3", "_sqlite3"):
        return _sqlite_message(str(error))
    return None


def _python_error(error: BaseException) -> Diagnosis | None:
    # A value the driver cannot even send (sqlite3: int beyond 64 bits; str with a
    # lone surrogate) is refused data too: the same row fails every time.
    if isinstance(error, OverflowError):
        return Diagnosis(DATA, "out_of_range")
    if isinstance(error, UnicodeError):
        return Diagnosis(DATA, "encoding")
    if isinstance(error, TimeoutError):
        return Diagnosis(CONN, "timeout")
    if isinstance(error, ConnectionRefusedError):
        return Diagnosis(CONN, "unreachable")
    if isinstance(error, ConnectionError):
        return Diagnosis(CONN, "lost")
    return None


def _connection(message: str, default: str) -> Diagnosis:
    text = message.lower()
    for needle, reason in _CLIENT_CONNECTION_MESSAGES:
        if needle in text:
            return Diagnosis(CONN, reason)
    return Diagnosis(CONN, default)


def _is_encoding(message: str) -> bool:
    text = message.lower()
    return "nul" in text or "encod" in text or "byte sequence" in text


def _is_pymysql(error: BaseException) -> bool:
    return (type(error).__module__ or "").startswith("pymysql")

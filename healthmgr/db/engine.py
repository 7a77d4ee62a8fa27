"""Engines for the three supported databases, configured once here.

* SQLite (the embedded default): WAL journal, foreign keys on, a busy timeout
  (5 s, or ``?timeout=SECONDS`` in the URL) and ``synchronous=NORMAL`` on
  every new connection. SQLAlchemy emits BEGIN
  itself (the sqlite3 driver's legacy mode skips it for SELECT and DDL), so
  transactions are real; ``conn.execution_options(sqlite_begin="IMMEDIATE")``
  takes the write lock at BEGIN, the single-writer equivalent of a row lock.
* PostgreSQL through psycopg 3, MariaDB/MySQL through PyMySQL: bare
  ``postgresql://`` / ``mysql://`` / ``mariadb://`` URLs are pointed at those
  drivers, connections are pinged before use and recycled before MariaDB's
  ``wait_timeout`` drops them.

A database that cannot be reached raises :class:`DatabaseUnavailable` with a
one-line message naming the host and port (or the file), never the password.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5
POOL_SIZE = 5
MAX_OVERFLOW = 10
# Below MariaDB's and most proxies' idle timeouts (wait_timeout defaults to 8 h).
POOL_RECYCLE_S = 1800

_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
}
_SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")


class DatabaseError(Exception):
    """Base of the database errors the CLI and the daemon print as one line."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached (server down, refused, bad file path, ...)."""


class BadDatabaseURL(DatabaseError, ValueError):
    """The connection URL is malformed or names an unsupported driver."""


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and point it at the supported driver of its dialect."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise BadDatabaseURL(f"not a database URL: {_redact(str(url))!r}") from e
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        supported = "sqlite:///PATH, postgresql://..., mysql:// or mariadb://..."
        raise BadDatabaseURL(f"unsupported database driver {parsed.drivername!r} ({supported})")
    parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def describe(url: str | URL) -> str:
    """Where the database is, for messages: ``PostgreSQL at host:5432/name``, no password."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return f"SQLite file {u.database}" if _is_file_db(u) else "in-memory SQLite"
    name, port = {"postgresql": ("PostgreSQL", 5432)}.get(backend, ("MariaDB/MySQL", 3306))
    return f"{name} at {u.host or 'localhost'}:{u.port or port}/{u.database or ''}"


def make_engine(url: str | URL, **kw: Any) -> Engine:
    """A configured engine for ``url``; ``kw`` go to :func:`sqlalchemy.create_engine`.

    Does not connect: use :func:`connect` or :func:`ping` for an early,
    clear :class:`DatabaseUnavailable`.
    """
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u, **kw)
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_S,
    }
    options.update(kw)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    connect_args.update(options.pop("connect_args", {}))
    return create_engine(u, connect_args=connect_args, **options)


def _sqlite_engine(u: URL, **kw: Any) -> Engine:
    if _is_file_db(u):
        # sqlite:///relative/x.db and sqlite:////abs/x.db: a missing directory
        # is created rather than reported as "unable to open database file".
        parent = Path(u.database).expanduser().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseUnavailable(
                f"cannot create the directory {parent} of {describe(u)}: {e.strerror}"
            ) from e
    busy_ms = _sqlite_busy_timeout_ms(u)
    engine = create_engine(u, **kw)

    def on_connect(dbapi_conn: sqlite3.Connection, record: object) -> None:
        _sqlite_on_connect(dbapi_conn, record, busy_ms)

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_busy_timeout_ms(u: URL) -> int:
    """``?timeout=SECONDS`` in the URL (as ``sqlite3.connect``'s), else the default."""
    raw = u.query.get("timeout")
    if raw is None:
        return SQLITE_BUSY_TIMEOUT_MS
    try:
        seconds = float(raw if isinstance(raw, str) else raw[-1])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 86400:
        raise BadDatabaseURL(f"SQLite timeout={raw!r}: expected seconds, e.g. ?timeout=5")
    return int(seconds * 1000)


def _sqlite_on_connect(
    dbapi_conn: sqlite3.Connection, _record: object, busy_ms: int = SQLITE_BUSY_TIMEOUT_MS
) -> None:
    # Let SQLAlchemy emit BEGIN (see _sqlite_on_begin) instead of the driver.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        # Durable at checkpoints, not at every commit: safe with WAL (no corruption).
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = str(conn.get_execution_options().get("sqlite_begin", "DEFERRED")).upper()
    if mode not in _SQLITE_BEGIN_MODES:
        raise ValueError(f"sqlite_begin must be one of {_SQLITE_BEGIN_MODES}, not {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _is_file_db(u: URL) -> bool:
    db = u.database
    return bool(db) and db != ":memory:" and not str(db).startswith("file:")


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return url.split("@")[-1]


def unavailable(engine_or_url: Engine | URL | str, error: BaseException) -> DatabaseUnavailable:
    """The one-line :class:`DatabaseUnavailable` for a failed connection attempt."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    orig = getattr(error, "orig", None) or error
    detail = " ".join(str(orig).split()) or type(orig).__name__
    return DatabaseUnavailable(f"cannot reach the database ({describe(url)}): {detail}")


def connect(engine: Engine) -> Connection:
    """``engine.connect()``, raising :class:`DatabaseUnavailable` when that fails."""
    try:
        return engine.connect()
    except (exc.OperationalError, exc.InterfaceError) as e:
        raise unavailable(engine, e) from e


def ping(engine: Engine) -> None:
    """Connect once and run ``SELECT 1``; :class:`DatabaseUnavailable` if unreachable."""
    with connect(engine) as conn:
        conn.exec_driver_sql("SELECT 1")

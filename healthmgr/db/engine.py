"""Engines for the three supported databases, configured once here.

* SQLite (the embedded default): WAL journal, foreign keys on, a busy timeout
  (``?timeout=SECONDS`` in the URL, else ``timeout``, else 5 s) and
  ``synchronous=NORMAL`` on every new connection. SQLAlchemy emits BEGIN
  itself (the sqlite3 driver's legacy mode skips it for SELECT and DDL), so
  transactions are real; ``conn.execution_options(sqlite_begin="IMMEDIATE")``
  takes the write lock at BEGIN, the single-writer equivalent of a row lock.
* PostgreSQL through psycopg 3, MariaDB/MySQL through PyMySQL: bare
  ``postgresql://`` / ``mysql://`` / ``mariadb://`` URLs are pointed at those
  drivers, connections are pinged before use and recycled before MariaDB's
  ``wait_timeout`` drops them, and MariaDB sessions run in strict mode (a
  value out of range is an error, never silently clamped).

``make_engine(url, timeout=T)`` bounds every wait of the engine's connections
(:class:`Bounds`): statements, lock waits, pool checkout, connecting, and
every read of a reply, so that a stalled or silent database raises an error
instead of hanging a thread. Without ``timeout`` (migrations, the CLI) only
the connect timeout and SQLite's busy timeout apply.

A database that cannot be reached raises :class:`DatabaseUnavailable` with a
one-line message naming the host and port (or the file), never the password.
"""

from __future__ import annotations

import functools
import math
import sqlite3
import time
from collections.abc import Generator
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Bounds:
    """Every wait of an engine's connections, derived from one ``timeout`` (seconds).

    The server gives up first, with a clean error on a connection that stays
    usable: lock waits after half the timeout (so the error says "lock"),
    statements after the timeout. The client gives up on a silent server a
    little later (``reply_s``) and drops the connection: the server may be
    gone, frozen, or unreachable with the kernel still acknowledging.
    """

    timeout: float

    @property
    def statement_ms(self) -> int:
        return max(1, round(self.timeout * 1000))

    @property
    def lock_ms(self) -> int:
        return max(1, round(self.timeout * 500))

    @property
    def lock_s(self) -> int:
        """Lock waits in whole seconds (InnoDB's and MariaDB's metadata-lock timeout)."""
        return max(1, math.ceil(self.timeout / 2))

    @property
    def reply_s(self) -> float:
        """Client side: the longest wait for a reply before the connection is dropped."""
        return self.timeout + max(1.0, self.timeout / 4)

    @property
    def connect_s(self) -> int:
        # libpq counts whole seconds and takes at least 2.
        return max(2, min(CONNECT_TIMEOUT_S, math.ceil(self.timeout)))

    @property
    def idle_in_transaction_s(self) -> int:
        """A session left idle inside a transaction (its client vanished mid-flush,
        holding row locks) is ended by the server after this: other managers'
        lock waits stay bounded. The manager never idles inside a transaction."""
        return max(5, math.ceil(2 * self.timeout))

    @property
    def keepalive_s(self) -> int:
        """Idle time before the first TCP keepalive probe, and between probes."""
        return max(1, math.ceil(self.timeout / 2))

    def postgresql(self) -> dict[str, Any]:
        """libpq connection parameters (psycopg's ``connect`` keywords)."""
        return {
            "connect_timeout": self.connect_s,
            "options": (
                f"-c statement_timeout={self.statement_ms} -c lock_timeout={self.lock_ms}"
                f" -c idle_in_transaction_session_timeout={self.idle_in_transaction_s * 1000}"
            ),
            # A silent peer (packets dropped): the kernel gives up on unacknowledged
            # data after tcp_user_timeout, and on an idle wait (query sent and
            # acknowledged, no reply) after a keepalive probe goes unanswered.
            "keepalives": 1,
            "keepalives_idle": self.keepalive_s,
            "keepalives_interval": self.keepalive_s,
            "keepalives_count": 2,
            "tcp_user_timeout": self.statement_ms,
        }

    def mysql(self) -> dict[str, Any]:
        """PyMySQL's ``connect`` keywords (socket timeouts)."""
        return {
            "connect_timeout": self.connect_s,
            "read_timeout": self.reply_s,
            "write_timeout": self.reply_s,
        }

    def mysql_session(self, server_version: str) -> str:
        """The SET statement of a new MariaDB (or MySQL) session."""
        if "mariadb" in server_version.lower():
            statement = (
                f"max_statement_time = {self.timeout:.3f},"
                f" idle_transaction_timeout = {self.idle_in_transaction_s}"
            )
        else:  # MySQL bounds only SELECT, in milliseconds
            statement = f"max_execution_time = {self.statement_ms}"
        return (
            f"SET SESSION {statement}, innodb_lock_wait_timeout = {self.lock_s},"
            f" lock_wait_timeout = {self.lock_s}"
        )


def make_engine(url: str | URL, *, timeout: float | None = None, **kw: Any) -> Engine:
    """A configured engine for ``url``; ``kw`` go to :func:`sqlalchemy.create_engine`.

    ``timeout`` (seconds, ``[database] timeout``) bounds every statement, lock
    wait, pool checkout and reply (see :class:`Bounds`); options given in the
    URL's query win over it. Does not connect: use :func:`connect` or
    :func:`ping` for an early, clear :class:`DatabaseUnavailable`.
    """
    u = normalize_url(url)
    bounds = None if timeout is None else Bounds(_positive(timeout))
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u, bounds, **kw)
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_S,
    }
    if bounds is not None:
        options["pool_timeout"] = bounds.timeout
    options.update(kw)
    connect_args = _server_connect_args(u, bounds)
    connect_args.update(options.pop("connect_args", {}))
    engine = create_engine(u, connect_args=connect_args, **options)
    if u.get_backend_name() == "postgresql" and bounds is not None:
        _bound_psycopg_replies(engine, bounds.reply_s)
    if u.get_backend_name() == "mysql":
        _set_mysql_session(engine, bounds)
    return engine


def _positive(timeout: float) -> float:
    if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


def _server_connect_args(u: URL, bounds: Bounds | None) -> dict[str, Any]:
    """Driver keywords for ``bounds``; a parameter in the URL's query wins over ours."""
    if bounds is None:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    ours = bounds.postgresql() if u.get_backend_name() == "postgresql" else bounds.mysql()
    args = {key: value for key, value in ours.items() if key not in u.query}
    if "options" in ours and "options" in u.query:
        # Both: a later -c overrides an earlier one, so the URL's come last.
        args["options"] = f"{ours['options']} {_last(u.query['options'])}"
    return args


def _last(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else value[-1]


def _bound_psycopg_replies(engine: Engine, reply_s: float) -> None:
    """Connections whose every wait for the server gives up after ``reply_s``."""
    connection_class = _bounded_psycopg_connection()

    def do_connect(_dialect: object, _record: object, cargs: Any, cparams: Any) -> Any:
        conn = connection_class.connect(*cargs, **cparams)
        conn.reply_timeout = reply_s
        return conn

    event.listen(engine, "do_connect", do_connect)


class _Expired(Exception):
    """Raised inside psycopg's wait loop when the reply deadline has passed."""


def _until(gen: Generator[Any, Any, Any], deadline: float) -> Generator[Any, Any, Any]:
    """``gen`` (a psycopg generator), raising :class:`_Expired` once ``deadline`` is past.

    psycopg's wait loop resumes the generator at least every 0.1 s (its
    interrupt-check interval), ready or not, so the deadline is checked then.
    """
    try:
        state = next(gen)
        while True:
            if time.monotonic() >= deadline:
                raise _Expired
            state = gen.send((yield state))
    except StopIteration as done:
        return done.value
    finally:
        gen.close()


@functools.cache
def _bounded_psycopg_connection() -> type:
    """psycopg's Connection with a deadline on every wait for the server.

    libpq has no read timeout: a query whose reply never comes (a frozen
    server, a stuck proxy, a peer whose kernel still acknowledges) waits for
    ever, TCP keepalives included. Every wait of psycopg's connection (execute,
    fetch, commit, rollback, pre-ping) goes through ``Connection.wait``; past
    the deadline the connection is in an unknown state, so it is closed and
    ``ReplyTimeout`` raised (SQLAlchemy then invalidates it).
    """
    import psycopg

    class ReplyTimeout(psycopg.OperationalError):
        """No reply from the server within the deadline; the connection was closed."""

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        reply_timeout: float | None = None

        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            if self.reply_timeout is None or kwargs.get("timeout") is not None:
                return super().wait(gen, *args, **kwargs)  # a caller's own timeout
            deadline = time.monotonic() + self.reply_timeout
            try:
                return super().wait(_until(gen, deadline), *args, **kwargs)
            except _Expired:
                self.pgconn.finish()
                raise ReplyTimeout(
                    f"no reply from the server within {self.reply_timeout:g} s: connection closed"
                ) from None

    return BoundedConnection


def _set_mysql_session(engine: Engine, bounds: Bounds | None) -> None:
    def on_connect(dbapi_conn: Any, _record: object) -> None:
        cur = dbapi_conn.cursor()
        try:
            # Strict whatever the server's sql_mode: an out-of-range or too long
            # value is refused, not clamped or truncated with a warning.
            cur.execute(
                "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES',"
                " CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))"
            )
            if bounds is not None:
                cur.execute(bounds.mysql_session(dbapi_conn.get_server_info()))
        finally:
            cur.close()

    event.listen(engine, "connect", on_connect)


def _sqlite_engine(u: URL, bounds: Bounds | None, **kw: Any) -> Engine:
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
    default_ms = SQLITE_BUSY_TIMEOUT_MS if bounds is None else bounds.statement_ms
    busy_ms = _sqlite_busy_timeout_ms(u, default_ms)
    if bounds is not None and _is_file_db(u) and "poolclass" not in kw:
        kw = {"pool_timeout": bounds.timeout} | kw
    engine = create_engine(u, **kw)

    def on_connect(dbapi_conn: sqlite3.Connection, record: object) -> None:
        _sqlite_on_connect(dbapi_conn, record, busy_ms)

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_busy_timeout_ms(u: URL, default_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> int:
    """``?timeout=SECONDS`` in the URL (as ``sqlite3.connect``'s), else ``default_ms``."""
    raw = u.query.get("timeout")
    if raw is None:
        return default_ms
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

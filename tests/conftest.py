"""Shared fixtures: real services, each test with a fresh database.

A test that needs PostgreSQL, MariaDB or HAProxy skips with the reason when
the service is missing, unless HEALTHMGR_REQUIRE_SERVICES=1 (CI), where it
fails instead.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get(
    "HEALTHMGR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/healthmgr_test"
)
MYSQL_ADMIN_URL = os.environ.get(
    "HEALTHMGR_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/healthmgr_test"
)
DIALECTS = ("sqlite", "postgresql", "mysql")
# The CLI tests' fixtures (db, sqlite_db, no_healthmgr_env), shared with tests/octavia.
pytest_plugins = ["tests.cli.clitest"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run soak/fuzz tests marked slow")
    parser.addoption(
        "--every-database",
        action="store_true",
        help="run tests marked databases(...) on every database their fixture offers (CI)",
    )


# A real-process test whose database part is proven on all three elsewhere names the
# databases it runs on by default: @pytest.mark.databases("postgresql"). With
# --every-database (CI runs it once) it runs on every one its fixture offers.
_EVERY = {"db_url": DIALECTS, "server_db_url": ("postgresql", "mysql")}
_DB_MARKS = {"postgresql": pytest.mark.postgresql, "mysql": pytest.mark.mysql}


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # As a parametrize mark, added before pytest reads them: the mark takes precedence over
    # the fixture's own params as if it had been written on the test.
    marker = metafunc.definition.get_closest_marker("databases")
    if marker is None:
        return
    fixture = next((f for f in _EVERY if f in metafunc.fixturenames), None)
    if fixture is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: databases() without a db fixture")
    names = _EVERY[fixture] if metafunc.config.getoption("--every-database") else marker.args
    if not set(names) <= set(_EVERY[fixture]):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: databases{marker.args}")
    params = [pytest.param(n, marks=_DB_MARKS.get(n, ())) for n in names]
    metafunc.definition.add_marker(pytest.mark.parametrize(fixture, params, indirect=True))


# The longest tests (real processes, Octavia's code, fresh venvs) start first, so that the
# parallel run (pytest-xdist) does not end waiting on one of them.
LONG_FIRST = (
    "tests/octavia/test_octavia_statuses.py",
    "tests/octavia/",
    "tests/chaos/",
    "tests/test_packaging.py",
    "tests/cli/test_demo.py",
    "tests/fault/",
    "tests/manager/test_daemon_",
    "tests/agent/test_bad_news.py",
)


def _start_rank(item: pytest.Item) -> int:
    ranks = (i for i, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix))
    return next(ranks, len(LONG_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_start_rank)  # stable: the order within each rank stays
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_host_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """In this process, the default configuration file is one that does not exist, never
    the host's /etc/healthmgr/healthmgr.toml: a test of the defaults must not pass or fail
    by what is installed. (A test that wants a default file passes ``default_path``.)"""
    from healthmgr.config import loading

    absent = tmp_path_factory.getbasetemp() / "no-host-config" / "healthmgr.toml"
    monkeypatch.setattr(loading, "DEFAULT_CONFIG_PATH", str(absent))


def services_required() -> bool:
    return os.environ.get("HEALTHMGR_REQUIRE_SERVICES", "") not in ("", "0")


def unavailable(what: str) -> None:
    """Skip, or fail under HEALTHMGR_REQUIRE_SERVICES=1."""
    if services_required():
        pytest.fail(f"{what} (required: HEALTHMGR_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    path = shutil.which("haproxy")
    if path is None and Path("/usr/sbin/haproxy").exists():
        path = "/usr/sbin/haproxy"
    if path is None:
        unavailable("haproxy is not installed (apt-get install haproxy)")
    return str(path)


def _split(url: str) -> tuple[str, str]:
    base, _, name = url.rpartition("/")
    return base, name


def _create_pg(name: str) -> Callable[[], None]:
    import psycopg

    base, admin_db = _split(PG_ADMIN_URL)
    conninfo = base.replace("postgresql+psycopg://", "postgresql://") + "/" + admin_db
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {conninfo}: {exc}".splitlines()[0])
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return drop


def _mysql_server(url: str) -> dict[str, Any]:
    """pymysql.connect's arguments for the server of ``url``."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return dict(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        connect_timeout=5,
    )


def drop_mysql(url: str) -> None:
    """Drop the MariaDB database of ``url`` (made by ``fresh_database_url``)."""
    import pymysql
    from sqlalchemy.engine import make_url

    with pymysql.connect(**_mysql_server(url)) as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


def _create_mysql(name: str) -> Callable[[], None]:
    import pymysql

    kwargs = _mysql_server(MYSQL_ADMIN_URL)
    try:
        conn = pymysql.connect(**kwargs)
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB is not reachable at {kwargs['host']}:{kwargs['port']}: {exc}")
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    url = _split(MYSQL_ADMIN_URL)[0] + "/" + name
    return lambda: drop_mysql(url)


def fresh_database_url(dialect: str, tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """A URL of a new, empty database of that dialect, and how to drop it."""
    name = f"hm_{uuid.uuid4().hex[:16]}"
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.db')}", lambda: None
    if dialect == "postgresql":
        return _split(PG_ADMIN_URL)[0] + "/" + name, _create_pg(name)
    if dialect == "mysql":
        return _split(MYSQL_ADMIN_URL)[0] + "/" + name, _create_mysql(name)
    raise ValueError(dialect)


class _Dropper:
    """Drops the tests' databases in a thread of this test process: a test's teardown
    does not wait for the server's DROP DATABASE (tens of ms idle, a few hundred under
    load, for every test on PostgreSQL or MariaDB). What fails is raised at the end of
    the session (``drain``)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def put(self, drop: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drop-databases", daemon=True)
            self._thread.start()
        self._queue.put(drop)

    def _run(self) -> None:
        while (drop := self._queue.get()) is not None:
            try:
                drop()
            except Exception as exc:  # raised by drain()
                self._errors.append(exc)

    def drain(self) -> None:
        """Until every database handed over is dropped."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        errors, self._errors = self._errors, []
        if errors:
            raise errors[0]


_DROPPER = _Dropper()


@pytest.fixture(scope="session", autouse=True)
def _databases_dropped() -> Iterator[None]:
    yield
    _DROPPER.drain()


def _db_fixture(dialect: str, tmp_path: Path) -> Iterator[str]:
    url, drop = fresh_database_url(dialect, tmp_path)
    try:
        yield url
    finally:
        if dialect == "sqlite":  # a file in tmp_path
            drop()
        else:
            _DROPPER.put(drop)


@pytest.fixture(params=[pytest.param(name, marks=_DB_MARKS.get(name, ())) for name in DIALECTS])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each of SQLite, PostgreSQL and MariaDB."""
    yield from _db_fixture(request.param, tmp_path)


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from _db_fixture("postgresql", tmp_path)


@pytest.fixture
def mysql_url(tmp_path: Path) -> Iterator[str]:
    yield from _db_fixture("mysql", tmp_path)


@pytest.fixture(params=["postgresql", "mysql"])
def server_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each of the two servers (row-lock features)."""
    yield from _db_fixture(request.param, tmp_path)

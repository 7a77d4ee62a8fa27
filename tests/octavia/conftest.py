"""Fixtures of the Octavia drop-in tests: Octavia 19.0.0 in its own venv, its schema on MariaDB.

``octavia_python`` is the interpreter of ``.venv-octavia`` (created by
scripts/setup.sh through scripts/octavia_venv.sh; created here when missing).
``octavia_db_url`` is a fresh MariaDB database whose schema Octavia's own
migrations created (``octavia-db-manage upgrade head``, run once per test run on
a template database that each test's database copies), with healthmgr's own
tables added by ``healthmgr db upgrade`` in the octavia schema.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from healthmgr.db import migrate
from healthmgr.db.engine import make_engine
from tests.conftest import drop_mysql, fresh_database_url, services_required, unavailable
from tests.octavia.rpc_worker import Worker, octavia_worker

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-octavia"


@pytest.fixture(scope="session")
def octavia_python() -> Path:
    python = VENV / "bin" / "python"
    done = subprocess.run(
        [str(REPO / "scripts" / "octavia_venv.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not python.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        what = f"cannot install octavia==19.0.0 into {VENV}: {' | '.join(tail)}"
        if services_required():
            pytest.fail(what, pytrace=False)
        pytest.skip(what)
    return python


def octavia_schema(octavia_python: Path, url: str, tmp_path: Path) -> None:
    """Octavia's own migrations on ``url`` (what an operator's `octavia-db-manage` does)."""
    conf = tmp_path / f"octavia-{url.rsplit('/', 1)[-1]}.conf"
    conf.write_text(f"[database]\nconnection = {url}\n")
    manage = octavia_python.parent / "octavia-db-manage"
    done = subprocess.run(
        [str(manage), "--config-file", str(conf), "upgrade", "head"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between the test processes (pytest-xdist's workers)."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def octavia_template(
    octavia_python: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """One database per test run whose schema Octavia's own migrations made; each test's
    database is a copy of it (``clone_database``): the migrations take seconds, a copy a
    fraction of that. The parallel workers share it: the first that needs it makes it
    (the others wait on a lock meanwhile, rather than each running the migrations beside
    it), the last one to finish drops it."""
    shared = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # a worker's: below the run's, shared by all
        shared = shared.parent
    state = shared / "octavia-template.json"
    lock = state.with_suffix(".lock")
    with _locked(lock):
        users = json.loads(state.read_text()) if state.exists() else {"url": None, "users": 0}
        if users["users"] == 0:
            tmp_path = tmp_path_factory.mktemp("octavia-template")
            url, drop = fresh_database_url("mysql", tmp_path)
            try:
                octavia_schema(octavia_python, url, tmp_path)
            except BaseException:
                drop()
                raise
            users["url"] = url
        users["users"] += 1
        state.write_text(json.dumps(users))
    try:
        yield users["url"]
    finally:
        with _locked(lock):
            users = json.loads(state.read_text())
            users["users"] -= 1
            state.write_text(json.dumps(users))
            if users["users"] == 0:
                drop_mysql(users["url"])


def clone_database(template_url: str, url: str) -> None:
    """Copy every table of ``template_url`` into the empty database ``url``: the
    statements MariaDB gives for them (SHOW CREATE TABLE: columns, keys, foreign keys),
    then their rows (Octavia's lookup tables, alembic_version)."""
    template = make_url(template_url).database
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            kinds = conn.exec_driver_sql(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = %s ORDER BY table_name",
                (template,),
            ).all()
            assert {kind for _, kind in kinds} == {"BASE TABLE"}, kinds
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            for table, _ in kinds:
                ddl = conn.exec_driver_sql(f"SHOW CREATE TABLE `{template}`.`{table}`").one()[1]
                conn.exec_driver_sql(ddl.replace("%", "%%"))
                conn.exec_driver_sql(f"INSERT INTO `{table}` SELECT * FROM `{template}`.`{table}`")
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        engine.dispose()


@pytest.fixture
def octavia_database(octavia_template: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Make fresh MariaDB databases with Octavia's schema (and healthmgr's own tables)."""
    drops: list[Callable[[], None]] = []

    def make(*, healthmgr_tables: bool = True) -> str:
        url, drop = fresh_database_url("mysql", tmp_path)
        drops.append(drop)
        clone_database(octavia_template, url)
        if healthmgr_tables:
            migrate.upgrade(url, schema=migrate.OCTAVIA)
        return url

    try:
        yield make
    finally:
        for drop in drops:
            drop()


@pytest.fixture
def octavia_db_url(octavia_database: Callable[..., str]) -> str:
    return octavia_database()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


@pytest.fixture
def worker() -> Iterator[Worker]:
    """A real oslo.messaging RPC server standing in for Octavia's worker (rpc_worker.py)."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        unavailable(f"RabbitMQ is not reachable at 127.0.0.1:5672: {exc}")
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is missing (each test makes a RabbitMQ virtual host with it)")
    with octavia_worker() as found:
        yield found

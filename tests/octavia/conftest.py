"""Fixtures of the Octavia drop-in tests: Octavia 19.0.0 in its own venv, its schema on MariaDB.

``octavia_python`` is the interpreter of ``.venv-octavia`` (created by
scripts/setup.sh through scripts/octavia_venv.sh; created here when missing).
``octavia_db_url`` is a fresh MariaDB database whose schema Octavia's own
migrations created (``octavia-db-manage upgrade head``), with healthmgr's own
tables added by ``healthmgr db upgrade`` in the octavia schema.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healthmgr.db import migrate
from tests.conftest import fresh_database_url, services_required, unavailable
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


@pytest.fixture
def octavia_database(octavia_python: Path, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Make fresh MariaDB databases with Octavia's schema (and healthmgr's own tables)."""
    drops: list[Callable[[], None]] = []

    def make(*, healthmgr_tables: bool = True) -> str:
        url, drop = fresh_database_url("mysql", tmp_path)
        drops.append(drop)
        octavia_schema(octavia_python, url, tmp_path)
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

"""Running ``healthmgr`` in tests: as a real process (the wiring), or in-process (fast).

``healthmgr(...)`` starts ``python -m healthmgr`` with no ``HEALTHMGR_*`` variables
but those given; ``cli(...)`` drives the same cliff application in this process
with its own stdout and stderr. Both return a CompletedProcess.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
Done = subprocess.CompletedProcess[str]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMGR_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def healthmgr(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Done:
    return subprocess.run(
        [sys.executable, "-m", "healthmgr", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or ROOT,
        env=clean_env(**(env or {})),
        check=False,
    )


def cli(*args: str, app: type | None = None) -> Done:
    """The command in this process (HEALTHMGR_* variables of the test apply); ``app``:
    another application of the same kind (healthmgr-chaos's ChaosApp)."""
    from healthmgr.cli.main import HealthmgrApp

    out, err = io.StringIO(), io.StringIO()
    try:
        code = (app or HealthmgrApp)(stdout=out, stderr=err).run(list(args))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def on_sqlite_as_a_process(url: str, *args: str) -> Done:
    """The command as a real process on SQLite (its wiring: argv, formatter, exit
    status, which no dialect changes), in this process on the servers (what each
    dialect changes: the queries). One real process per command, not per dialect."""
    return healthmgr(*args) if url.startswith("sqlite") else cli(*args)


@pytest.fixture
def no_healthmgr_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HEALTHMGR_") and name != "HEALTHMGR_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


def one_error_line(done: Done) -> str:
    """The single ``healthmgr: error:`` line a failed command printed (asserted so)."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("healthmgr: error: "), lines[0]
    assert done.stdout == "", done.stdout
    return lines[0]


@dataclass
class Db:
    """A migrated database for CLI tests, and the arguments that name it."""

    url: str
    engine: sa.Engine

    @property
    def args(self) -> list[str]:
        return ["--db-url", self.url]

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def execute(self, sql: str, **params: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


def migrated(url: str) -> Iterator[Db]:
    from healthmgr.db.engine import make_engine
    from healthmgr.db.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    try:
        yield Db(url, engine)
    finally:
        engine.dispose()


# Fixtures: tests/conftest.py loads this module as a plugin.


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    """A database at this release's schema head, on SQLite, PostgreSQL and MariaDB."""
    yield from migrated(db_url)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Db]:
    """A database at head on SQLite only: for what the database plays no part in."""
    yield from migrated(f"sqlite:///{tmp_path / 'hm.db'}")

"""Fixtures for tests that run the real daemon against a real database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from healthmgr.db.migrate import upgrade
from tests.db.factories import SeedIds, make_seed_lb
from tests.manager.harness import Agent

# For behaviour that does not depend on the database: SQLite and one server.
SQLITE_AND_PG = pytest.mark.databases("sqlite", "postgresql")
# For process behaviour the database plays no part in (signals, sd_notify).
SQLITE_ONLY = pytest.mark.databases("sqlite")


def agent_for(seed: SeedIds, index: int = 0) -> Agent:
    """A fake amphora (``seed.amphorae[index]``) reporting the seed topology."""
    return Agent(seed.amphorae[index], seed.listener, seed.pool, seed.members_by_pool[seed.pool])


def ago(seconds: float) -> dt.datetime:
    """A naive UTC timestamp ``seconds`` in the past (the form the columns hold)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=seconds)


@dataclass
class SeededDb:
    url: str
    engine: sa.Engine
    seed: SeedIds

    def agent(self, index: int = 0) -> Agent:
        return agent_for(self.seed, index)

    def execute(self, sql: str, **params: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def rows(self, sql: str, **params: object) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))


def migrated_engine(url: str) -> sa.Engine:
    upgrade(url)
    return make_engine(url)


def _seeded(url: str) -> Iterator[SeededDb]:
    engine = migrated_engine(url)
    seed = make_seed_lb(engine, operating_status="OFFLINE", with_health=False)
    yield SeededDb(url, engine, seed)
    engine.dispose()


@pytest.fixture
def seeded(db_url: str) -> Iterator[SeededDb]:
    """A migrated database (each dialect) holding the seed load balancer."""
    yield from _seeded(db_url)


@pytest.fixture
def server_seeded(server_db_url: str) -> Iterator[SeededDb]:
    """``seeded`` on PostgreSQL and MariaDB only (several managers, row locks)."""
    yield from _seeded(server_db_url)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    return d

"""Fixtures of the CLI tests: a migrated database on each dialect, or on SQLite alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.clitest import Db, migrated, no_healthmgr_env  # noqa: F401 (a fixture)


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    """A database at this release's schema head, on SQLite, PostgreSQL and MariaDB."""
    yield from migrated(db_url)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Db]:
    """A database at head on SQLite only: for what the database plays no part in."""
    yield from migrated(f"sqlite:///{tmp_path / 'hm.db'}")

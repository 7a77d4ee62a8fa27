"""Fixtures of the data-layer tests: an engine with the tables, and a Store on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from healthmgr.db.store import Store
from tests.db.factories import make_test_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_test_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> Store:
    return Store(engine)

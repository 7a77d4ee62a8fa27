"""Fixtures of the fault tests: a test database reached through the fault relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from healthmgr.chaos.relay import Relay


def through(url: str, address: tuple[str, int]) -> str:
    """``url`` with its host and port replaced by ``address`` (the relay's)."""
    host, port = address
    return make_url(url).set(host=host, port=port).render_as_string(hide_password=False)


def server_address(url: str) -> tuple[str, int]:
    u = make_url(url)
    default = 5432 if u.get_backend_name() == "postgresql" else 3306
    return u.host or "127.0.0.1", u.port or default


@dataclass(frozen=True, slots=True)
class Relayed:
    relay: Relay
    url: str  # the database, through the relay
    direct_url: str  # the same database, not through the relay


@pytest.fixture
def relayed(server_db_url: str) -> Iterator[Relayed]:
    """A fresh database on PostgreSQL and on MariaDB, reached through a relay in pass mode."""
    with Relay(server_address(server_db_url)) as relay:
        yield Relayed(relay, through(server_db_url, relay.address), server_db_url)

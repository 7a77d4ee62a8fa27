"""A database outage under the real daemon: nothing lost, no false failover.

SQLite: the test holds the write lock (``BEGIN EXCLUSIVE``) longer than the
daemon's busy timeout (``?timeout=0.2`` in its URL). PostgreSQL: the test
database stops accepting connections (``ALLOW_CONNECTIONS false``) and its
sessions are terminated, from an admin connection to another database.

Meanwhile amphora A keeps beating; B and C die at the start of the outage,
B after one last heartbeat reporting a member DOWN and some traffic.
Expected: flushes fail (log line, metric), then what B reported is written;
A is never failed over (its rows in the database went stale only because of
our outage); B and C are, but only a full heartbeat_timeout after the
database came back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from healthmgr.wire.ids import id_str
from healthmgr.wire.values import MemberState
from tests.conftest import PG_ADMIN_URL
from tests.db.factories import make_seed_lb
from tests.manager.conftest import SeededDb, agent_for
from tests.manager.harness import Beater, start_daemon, write_config

TIMEOUT = 2.0
OUTAGE = TIMEOUT + 1.5  # longer than heartbeat_timeout: A's rows go stale meanwhile


@contextmanager
def sqlite_locked(url: str) -> Iterator[None]:
    conn = sqlite3.connect(make_url(url).database, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextmanager
def postgresql_unreachable(url: str) -> Iterator[None]:
    import psycopg

    name = make_url(url).database
    base, _, admin_db = PG_ADMIN_URL.rpartition("/")
    conninfo = base.replace("postgresql+psycopg://", "postgresql://") + "/" + admin_db
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _outage(db: SeededDb):
    return sqlite_locked(db.url) if db.url.startswith("sqlite") else postgresql_unreachable(db.url)


# Not databases(...): the outage is made by each database's own means, and MariaDB has no
# ALLOW_CONNECTIONS (its outages, made by a relay, are in test_daemon_cutoff.py).
@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_outage_loses_nothing_and_fails_over_nobody_by_mistake(
    seeded: SeededDb, config_dir: Path
) -> None:
    a = seeded.agent()
    b_seed = make_seed_lb(seeded.engine, with_health=False)
    b, c = agent_for(b_seed), agent_for(make_seed_lb(seeded.engine, with_health=False))
    daemon_url = seeded.url + ("?timeout=0.2" if seeded.url.startswith("sqlite") else "")
    cfg = write_config(
        config_dir / "hm.toml",
        daemon_url,
        sections={"health_manager": {"heartbeat_timeout": TIMEOUT, "manager_id": "hm-o"}},
    )
    daemon = start_daemon(cfg)
    try:
        with Beater([daemon], [a, b, c]) as beater:
            daemon.until(
                lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 3,
                what="all three amphorae reported",
            )
            seeded.engine.dispose()  # the test's own pooled sessions go with the outage
            with _outage(seeded):
                beater.remove(b)  # B and C die as the database goes away...
                beater.remove(c)
                time.sleep(0.4)  # (the beater's current round is over)
                # ...B with one last word: a member DOWN, and some traffic.
                daemon.send(
                    b.datagram(members={b_seed.members[1]: MemberState.DOWN}, add=(7, 11, 1, 0))
                )
                daemon.wait_for_log("flush failed; keeping pending writes and retrying")
                assert daemon.metric("healthmgr_flush_failures_total") > 0
                time.sleep(OUTAGE)
            back = daemon.log_time("database is back; pending writes flushed")
            daemon.until(lambda: len(_requests(seeded)) == 2, what="B and C failed over")
        # What B said during the outage was kept and written.
        assert _status(seeded, "member", b_seed.members[1]) == "ERROR"
        assert _status(seeded, "pool", b_seed.pool) == "DEGRADED"
        assert _stats(seeded, b.amphora) == (7, 11, 1)
        # A beat throughout: never failed over, although its rows went stale in the
        # database during the outage. B and C were, a full timeout after recovery.
        assert sorted(_requests(seeded)) == sorted(
            [(id_str(b.amphora), "hm-o"), (id_str(c.amphora), "hm-o")]
        )
        for dead in (b, c):
            failing_over = daemon.log_time("failing over amphora", amphora_id=id_str(dead.amphora))
            assert failing_over - back >= TIMEOUT - 0.5
    finally:
        assert daemon.stop() == 0


def _requests(db: SeededDb) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in db.rows("SELECT amphora_id, requested_by FROM failover_request")]


def _status(db: SeededDb, table: str, obj: bytes) -> str:
    return str(db.scalar(f"SELECT operating_status FROM {table} WHERE id = :i", i=id_str(obj)))


def _stats(db: SeededDb, amphora: bytes) -> tuple[int, ...]:
    rows = db.rows(
        "SELECT bytes_in, bytes_out, total_connections FROM listener_statistics"
        " WHERE amphora_id = :a",
        a=id_str(amphora),
    )
    return tuple(rows[0]) if rows else ()

"""A manager that cannot see does not judge: database faults against real daemons.

Cases 1 and 8 of issue 7, each on PostgreSQL or MariaDB. The faults are made by
the relay (healthmgr/chaos/relay.py) between one manager and the database, or
by another session holding a row lock; the database server itself is never
stopped. Short intervals keep them fast: heartbeat_interval 0.5 s,
heartbeat_timeout 2 s, [database] timeout 1 s. Each fault lasts until the rows of
live amphorae are stale in the database (what could mislead a manager), and the
tests wait on the daemon's word (its log, its metrics) rather than fixed times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from healthmgr.chaos.relay import Relay
from healthmgr.db.dbtime import db_now
from healthmgr.db.engine import make_engine
from healthmgr.db.models import AmphoraHealth
from healthmgr.wire.ids import id_str
from tests.db.factories import make_fleet
from tests.fault.conftest import server_address, through
from tests.manager.conftest import agent_for, migrated_engine
from tests.manager.harness import JUDGING, Beater, RunningDaemon, start_daemon, write_config

INTERVAL = 0.5
TIMEOUT = 2.0
# Each case on one server, both servers in all: what the database and its driver do
# under these faults (bounded connects, reads, commits and lock waits; refused
# connections; the managers' liveness rows) is proven on both by
# tests/fault/test_db_bounds.py, tests/db/test_errors.py and tests/db/test_store_claims.py.
# Here the manager's judgment under the fault is proven, the same on either.
ON_POSTGRESQL = pytest.mark.databases("postgresql")
ON_MARIADB = pytest.mark.databases("mysql")


def _config(path: Path, url: str, manager: str, **hm: Any) -> Path:
    return write_config(
        path,
        url,
        sections={
            "health_manager": {
                "heartbeat_interval": INTERVAL,
                "heartbeat_timeout": TIMEOUT,
                "health_check_interval": 0.2,
                "flush_interval": 0.05,
                "manager_id": manager,
                **hm,
            },
            "database": {"timeout": 1.0},
        },
    )


def _requests(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.exec_driver_sql("SELECT amphora_id FROM failover_request ORDER BY id")
        ]


def _reported(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM amphora_health").scalar_one())


IMPAIRED = "manager impaired: no failover verdict until it has been healthy for heartbeat_timeout"


def _deferred(daemon: RunningDaemon) -> float:
    return daemon.metric(
        "healthmgr_failover_verdicts_total", verdict="defer", reason="observer_unreachable"
    )


def _stale(engine: sa.Engine, count: int) -> bool:
    """Whether ``count`` amphorae's rows are older than heartbeat_timeout (by the
    database's clock, as the managers read them)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(AmphoraHealth.c.last_update)).scalars().all()
        now = db_now(conn)
    return sum(1 for t in rows if (now - t).total_seconds() > TIMEOUT) >= count


CHECKS = 4 * 0.2  # four health-check intervals


def _judged_again(daemon: RunningDaemon, judging: int) -> None:
    """Until the daemon judges again after the grace that follows a fault (``judging``:
    its count of JUDGING once impaired by it), and a few checks more: a verdict on a
    live amphora (they beat all along) would be in the database by then."""
    daemon.wait_judging(after=judging)
    time.sleep(CHECKS)


def _stop(*daemons: RunningDaemon) -> None:
    for d in daemons:
        if d.proc.poll() is None:
            assert d.stop() == 0, "\n".join(d.lines[-20:])


@ON_POSTGRESQL
def test_a_manager_cut_off_from_the_database_gets_none_of_its_amphorae_failed_over(
    server_db_url: str, config_dir: Path
) -> None:
    """Managers A and B share the database; 24 amphorae send to A only, 4 to B.
    A's connection is blackholed until B has deferred A's stale amphorae and a
    heartbeat_timeout more: in the database A's amphorae go stale, but B sees that
    their observer is not live and fails over none of them. One of A's amphorae
    really died as the fault began: it is failed over, once, after A is back."""
    engine = migrated_engine(server_db_url)
    fleet = make_fleet(engine, 28, with_health=False)
    a_agents = [agent_for(s) for s in fleet[:24]]
    b_agents = [agent_for(s) for s in fleet[24:]]
    with Relay(server_address(server_db_url)) as relay:
        a = start_daemon(
            _config(config_dir / "a.toml", through(server_db_url, relay.address), "hm-a")
        )
        b = start_daemon(_config(config_dir / "b.toml", server_db_url, "hm-b"))
        try:
            with Beater([a], a_agents, INTERVAL) as to_a, Beater([b], b_agents, INTERVAL):
                a.until(lambda: _reported(engine) == 28, what="all reported")
                for d in (a, b):
                    d.wait_judging()  # past both managers' start-up grace
                dead = a_agents[5]
                to_a.remove(dead)
                time.sleep(0.3)  # its last heartbeat flushed
                relay.blackhole()
                a.wait_for_log(IMPAIRED, timeout=10)
                # A's amphorae go stale in the database: B defers them (their observer
                # is unreachable), and keeps deferring them for another heartbeat_timeout.
                b.until(lambda: _deferred(b) >= 20, what="B deferred A's amphorae", timeout=20)
                time.sleep(TIMEOUT)
                assert _requests(engine) == []  # B failed over none of A's amphorae
                relay.passthrough()
                a.wait_for_log("database is back; pending writes flushed", timeout=15)
                a.until(lambda: _requests(engine), what="the dead one failed over", timeout=20)
                time.sleep(CHECKS)
            assert _requests(engine) == [id_str(dead.amphora)]
            assert _deferred(b) >= 20
            assert a.metric("healthmgr_impairments_total", reason="db_write_failed") >= 1
        finally:
            _stop(a, b)
            engine.dispose()


@contextmanager
def _row_locked(url: str, amphora: bytes, seconds: float) -> Iterator[threading.Event]:
    """Another session holds SELECT ... FOR UPDATE on one amphora_health row."""
    engine = make_engine(url)
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with engine.connect() as conn, conn.begin():
            conn.execute(
                sa.text("SELECT * FROM amphora_health WHERE amphora_id = :a FOR UPDATE"),
                {"a": id_str(amphora)},
            )
            held.set()
            done.wait(seconds)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    held.wait(10)
    try:
        yield done
    finally:
        done.set()
        thread.join(30)
        engine.dispose()


@ON_MARIADB
def test_a_locked_row_stalls_the_flush_and_the_manager_judges_nothing(
    server_db_url: str, config_dir: Path
) -> None:
    """Case 8: another session holds one live amphora's health row until all 30
    rows are older than heartbeat_timeout. The flush waits at most the lock bound,
    fails, and is retried; the manager is impaired meanwhile and fails over none of
    the 30 live amphorae whose rows went stale; it notices the end within seconds."""
    engine = migrated_engine(server_db_url)
    fleet = make_fleet(engine, 30, with_health=False)
    agents = [agent_for(s) for s in fleet]
    daemon = start_daemon(_config(config_dir / "hm.toml", server_db_url, "hm-a"))
    try:
        with Beater([daemon], agents, INTERVAL):
            daemon.until(lambda: _reported(engine) == 30, what="all reported")
            daemon.wait_judging()
            with _row_locked(server_db_url, agents[0].amphora, 30.0):
                event = daemon.wait_for_log(IMPAIRED, timeout=10)
                assert set(event["reasons"]) & {"db_write_failed", "db_stalled"}
                judging = daemon.count(JUDGING)
                daemon.wait_for_log("flush failed; keeping pending writes and retrying")
                # Held until every live amphora's row is stale, and a few checks more.
                daemon.until(lambda: _stale(engine, 30), what="all rows stale", timeout=15)
                time.sleep(CHECKS)
            released = time.time()
            back = daemon.log_time("database is back; pending writes flushed")
            assert back - released < 5.0, "recovery noticed seconds late"
            _judged_again(daemon, judging)
        assert _requests(engine) == []
        assert daemon.metric("healthmgr_flush_failures_total") >= 1
    finally:
        _stop(daemon)
        engine.dispose()


@ON_MARIADB
def test_a_blackholed_or_refusing_database_is_noticed_not_silent(
    server_db_url: str, config_dir: Path
) -> None:
    """Case 8: through a blackhole the daemon does not sit silent (impaired
    within the bound, logged, metrics), and a refused connection is noticed
    back within seconds; no live amphora is failed over after either."""
    engine = migrated_engine(server_db_url)
    fleet = make_fleet(engine, 10, with_health=False)
    agents = [agent_for(s) for s in fleet]
    with Relay(server_address(server_db_url)) as relay:
        daemon = start_daemon(
            _config(config_dir / "hm.toml", through(server_db_url, relay.address), "hm-a")
        )
        try:
            with Beater([daemon], agents, INTERVAL):
                daemon.until(lambda: _reported(engine) == 10, what="all reported")
                daemon.wait_judging()
                relay.blackhole()
                started = time.time()
                impaired = daemon.log_time(IMPAIRED)
                assert impaired - started < 10.0
                daemon.until(lambda: _stale(engine, 10), what="all rows stale", timeout=15)
                daemon.until(
                    lambda: (
                        daemon.metric("healthmgr_impaired") == 1
                        and daemon.metric("healthmgr_database_reachable") == 0
                    ),
                    what="impaired and the database unreachable, in the metrics",
                    timeout=15,
                )
                relay.passthrough()
                daemon.wait_for_log(
                    "manager healthy again; grace period before any failover verdict", timeout=15
                )
                impaired_before = daemon.count(IMPAIRED)
                relay.refuse()
                daemon.until(lambda: daemon.count(IMPAIRED) > impaired_before, what="impaired")
                judging = daemon.count(JUDGING)
                daemon.wait_for_log("flush failed; keeping pending writes and retrying")
                daemon.until(lambda: _stale(engine, 10), what="all rows stale", timeout=15)
                relay.passthrough()
                restored = time.time()
                recovered = [
                    e
                    for e in daemon.events()
                    if e.get("event") == "database is back; pending writes flushed"
                ]
                daemon.until(
                    lambda: (
                        len(
                            [
                                e
                                for e in daemon.events()
                                if e.get("event") == "database is back; pending writes flushed"
                            ]
                        )
                        > len(recovered)
                    ),
                    what="noticed back",
                    timeout=10,
                )
                assert time.time() - restored < 5.0
                _judged_again(daemon, judging)
            assert _requests(engine) == []
        finally:
            _stop(daemon)
            engine.dispose()

"""Failover through Octavia's worker: the ``octavia`` driver, a real RPC cast on RabbitMQ.

The database is Octavia's own schema (its migrations, MariaDB); the worker is
a real oslo.messaging RPC server on Octavia's topic that records the casts
(tests/octavia/rpc_worker.py). RabbitMQ runs on this machine (127.0.0.1:5672).
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.config import load_settings
from healthmgr.db.engine import make_engine
from healthmgr.manager.failover import DriverResult, FailoverJob
from healthmgr.octavia.rpc import OctaviaDriver
from tests.manager.harness import start_daemon, wait_until, write_config
from tests.octavia import cases as gen
from tests.octavia.rpc_worker import Recorder, Worker

pytestmark = pytest.mark.mysql


def seed(url: str, rng: random.Random, statuses: list[str]) -> list[gen.Case]:
    made = [gen.simple(rng, s) for s in statuses]
    engine = make_engine(url)
    with engine.begin() as conn:
        gen.insert(conn, made)
        gen.stale_health(conn, [c.amphorae[0] for c in made])
    engine.dispose()
    return made


def lb_status(url: str) -> dict[str, str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, provisioning_status FROM load_balancer")).all()
    engine.dispose()
    return {r[0]: r[1] for r in rows}


def broker_connections(vhost: str) -> int:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "vhost", "--silent"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split().count(vhost)


def settle(recorder: Recorder, count: int) -> list[str]:
    """The casts once ``count`` arrived, and a moment more in which no other may."""
    wait_until(lambda: len(recorder.casts) >= count, what=f"{count} casts")
    time.sleep(1.0)
    return list(recorder.casts)


async def test_driver_sets_pending_update_casts_once_and_skips_an_immutable_lb(
    octavia_db_url: str, worker: Worker, tmp_path: Path
) -> None:
    recorder, exchange, rabbit_url = worker
    active, pending = seed(octavia_db_url, random.Random(5), ["ACTIVE", "PENDING_UPDATE"])
    cfg = write_config(
        tmp_path / "hm.toml",
        octavia_db_url,
        sections={
            "database": {"schema": "octavia"},
            "failover": {
                "driver": "octavia",
                "transport_url": rabbit_url,
                "control_exchange": exchange,
            },
        },
    )
    driver = OctaviaDriver(load_settings(cfg))

    def job(case: gen.Case, request_id: int) -> FailoverJob:
        return FailoverJob(case.amphorae[0], case.lb_id, "heartbeat_timeout", request_id)

    assert await driver.run(job(active, 1)) is DriverResult.HANDED_OFF
    assert lb_status(octavia_db_url)[active.lb_id] == "PENDING_UPDATE"
    # The same request again (a retry, a lease taken over): its own PENDING_UPDATE
    # does not stop it, and the cast it recorded is not sent twice.
    assert await driver.run(job(active, 1)) is DriverResult.HANDED_OFF
    # Immutable: the API's worker is changing that load balancer. Skipped, untouched.
    assert await driver.run(job(pending, 2)) is DriverResult.SKIPPED
    assert lb_status(octavia_db_url)[pending.lb_id] == "PENDING_UPDATE"
    assert settle(recorder, 1) == [active.amphorae[0]]
    # close() (a reload's replaced driver, the shutdown) ends its broker connection.
    vhost = rabbit_url.rsplit("/", 1)[1]
    with_driver = broker_connections(vhost)
    driver.close()
    wait_until(lambda: broker_connections(vhost) < with_driver, what="driver's connection closed")
    assert driver.engine.pool.checkedin() == 0


def test_two_managers_fail_each_dead_amphora_over_exactly_once_through_the_worker(
    octavia_db_url: str, worker: Worker, config_dir: Path
) -> None:
    recorder, exchange, rabbit_url = worker
    rng = random.Random(11)
    made = seed(octavia_db_url, rng, ["ACTIVE"] * 5 + ["ERROR"] + ["PENDING_UPDATE"] * 2)
    failoverable = {c.amphorae[0] for c in made if c.provisioning_status != "PENDING_UPDATE"}
    daemons = []
    for i in (1, 2):
        cfg = write_config(
            config_dir / f"hm{i}.toml",
            octavia_db_url,
            sections={
                "health_manager": {
                    "manager_id": f"hm-{i}",
                    "failover_threshold": "off",
                    "heartbeat_timeout": 2.0,
                    "failover_threads": 2,
                },
                "database": {"schema": "octavia"},
                "failover": {
                    "driver": "octavia",
                    "transport_url": rabbit_url,
                    "control_exchange": exchange,
                },
            },
        )
        daemons.append(start_daemon(cfg, wait=False))
    try:
        for d in daemons:
            d.wait_serving()
        casts = settle(recorder, len(failoverable))
        wait_until(
            lambda: all(d.metric("healthmgr_stale_amphorae") == 0 for d in daemons),
            what="no manager sees a stale amphora",
        )
        casts = list(recorder.casts)
        assert Counter(casts) == Counter(failoverable)  # each exactly once, no other
        statuses = lb_status(octavia_db_url)
        for c in made:
            expected = "PENDING_UPDATE"  # by the test-and-set, or immutable and untouched
            assert statuses[c.lb_id] == expected, c.provisioning_status
        engine = make_engine(octavia_db_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT amphora_id, state, requested_by FROM failover_request")
            ).all()
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        engine.dispose()
        assert {r[0] for r in rows} == failoverable
        assert {r[1] for r in rows} == {"PENDING"}  # handed to Octavia's worker
        assert version == "fabf4983846b"  # Octavia's own revision, untouched
        print("claims per manager:", dict(Counter(r[2] for r in rows)))
    finally:
        codes = [d.stop() for d in daemons]
    assert codes == [0, 0]

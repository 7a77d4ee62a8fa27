"""Several real managers on one PostgreSQL or MariaDB database: exactly-once failover.

Three ``healthmgr serve`` processes (own ports, own manager ids) share one
database holding 20 amphorae that are all stale. Each claims with
``SELECT ... FOR UPDATE SKIP LOCKED``, at most ``failover_threads`` (2) per
round, so the claims interleave; every amphora must get exactly one
failover_request.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from healthmgr.wire.ids import id_str
from tests.db.factories import make_fleet
from tests.manager.conftest import ago, migrated_engine
from tests.manager.harness import RunningDaemon, start_daemon, wait_until, write_config

AMPHORAE = 20
MANAGERS = 3


def start_managers(url: str, config_dir: Path, count: int, **hm: object) -> list[RunningDaemon]:
    """``count`` daemons on one database, started together (ids hm-1, hm-2, ...)."""
    daemons = []
    for i in range(1, count + 1):
        cfg = write_config(
            config_dir / f"hm{i}.toml",
            url,
            # 20 amphorae stale at once on purpose: no breaker here.
            sections={
                "health_manager": {"manager_id": f"hm-{i}", "failover_threshold": "off", **hm}
            },
        )
        daemons.append(start_daemon(cfg, wait=False))
    try:
        for d in daemons:
            d.wait_serving()
    except BaseException:
        for d in daemons:  # none may outlive the test
            d.stop(signal.SIGKILL)
        raise
    return daemons


# The claims themselves (SKIP LOCKED, each stale amphora once) are proven on both servers
# by tests/db/test_store_claims.py: three real managers on PostgreSQL by default, on
# MariaDB too in CI's --every-database pass.
@pytest.mark.databases("postgresql")
def test_every_stale_amphora_failed_over_exactly_once_by_three_managers(
    server_db_url: str, config_dir: Path
) -> None:
    engine = migrated_engine(server_db_url)
    fleet = make_fleet(engine, AMPHORAE, last_update=ago(3600))
    expected = {id_str(s.amphora) for s in fleet}
    daemons = start_managers(
        server_db_url, config_dir, MANAGERS, heartbeat_timeout=2.0, failover_threads=2
    )
    try:

        def requests() -> list[tuple[str, str]]:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT amphora_id, requested_by FROM failover_request")
                return [(r[0], r[1]) for r in rows]

        wait_until(lambda: len(requests()) >= AMPHORAE, what=f"{AMPHORAE} requests")
        # A few more rounds of every manager's health check: nothing more is claimed.
        wait_until(
            lambda: all(d.metric("healthmgr_stale_amphorae") == 0 for d in daemons),
            what="no manager sees a stale amphora",
        )
        rows = requests()
        per_amphora = Counter(amp for amp, _ in rows)
        assert set(per_amphora) == expected
        assert max(per_amphora.values()) == 1, per_amphora.most_common(3)
        by_manager = Counter(by for _, by in rows)
        print("claims per manager:", dict(by_manager))
        assert set(by_manager) <= {f"hm-{i}" for i in range(1, MANAGERS + 1)}
        with engine.connect() as conn:
            busy = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM amphora_health WHERE busy = true"
            ).scalar()
        assert busy == AMPHORAE
        requested = sum(d.metric("healthmgr_failovers_total", outcome="requested") for d in daemons)
        assert requested == AMPHORAE
    finally:
        codes = [d.stop() for d in daemons]
        engine.dispose()
    assert codes == [0] * MANAGERS

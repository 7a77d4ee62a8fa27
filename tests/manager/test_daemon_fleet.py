"""The fleet gate through the real daemon: an amphora the database does not list
costs no key derivation beyond a budget, and gets in once it is listed."""

from __future__ import annotations

import time
from pathlib import Path

from tests.db.factories import _insert, seed_rows
from tests.manager.conftest import SQLITE_ONLY, SeededDb, agent_for
from tests.manager.harness import Agent, RunningDaemon, start_daemon, write_config


# The gate is the decoder's: SQLite only. The fleet query is proven on all three by
# tests/db/test_store_fleet.py.
@SQLITE_ONLY
def test_unlisted_amphora_is_rejected_until_the_fleet_lists_it(
    seeded: SeededDb, config_dir: Path
) -> None:
    daemon = start_daemon(
        write_config(
            config_dir / "hm.toml",
            seeded.url,
            sections={
                "health_manager": {"fleet_refresh_interval": 0.2, "unlisted_derive_rate": 0},
            },
        )
    )
    listed = seeded.agent()
    newcomer_seed, newcomer_rows = seed_rows(with_health=False)  # not in the database yet
    newcomer = agent_for(newcomer_seed)
    try:
        daemon.wait_for_log("fleet loaded", amphorae=1)
        daemon.send(listed.datagram(), newcomer.datagram(), newcomer.datagram())
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="unlisted") == 2,
            "the unlisted amphora rejected",
        )
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="accepted") == 1,
            "the listed amphora accepted",
        )
        daemon.wait_for_log("heartbeat rejected", reason="unlisted")

        _insert(seeded.engine, newcomer_rows)
        daemon.until(lambda: _accepted_after_send(daemon, newcomer), "accepted once listed")
        assert daemon.metric("healthmgr_heartbeats_total", result="bad_signature") == 0
    finally:
        assert daemon.stop() == 0


def _accepted_after_send(daemon: RunningDaemon, agent: Agent) -> bool:
    before = daemon.metric("healthmgr_heartbeats_total", result="accepted")
    daemon.send(agent.datagram())
    time.sleep(0.2)
    return daemon.metric("healthmgr_heartbeats_total", result="accepted") > before

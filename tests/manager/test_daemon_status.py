"""The real daemon keeps statuses and amphora_health current from real datagrams."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from healthmgr.wire.values import MemberState
from tests.manager.conftest import SQLITE_AND_PG, SQLITE_ONLY, SeededDb
from tests.manager.harness import alive, descendants, start_daemon, wait_until, write_config
from tests.manager.test_daemon_octavia import octavia_datagram


def _status(db: SeededDb, table: str, obj_id: bytes) -> str:
    from healthmgr.wire.ids import id_str

    return str(db.scalar(f"SELECT operating_status FROM {table} WHERE id = :i", i=id_str(obj_id)))


# The daemon's path from datagram to status rows, on SQLite and PostgreSQL (MariaDB with
# --every-database). What MariaDB changes, the queries, is proven on all three in-process:
# tests/db/test_store_topology.py (the topology read), tests/db/test_store_flush.py
# (test_report_writes_its_statuses_and_only_operating_status: member ERROR, pool and load
# balancer DEGRADED; test_bump_inserts_then_only_moves_forward: amphora_health); and the
# daemon runs on MariaDB in test_daemon_stats.py, test_daemon_judgment.py, test_daemon_cutoff.py.
@SQLITE_AND_PG
def test_heartbeat_sets_everything_online_then_member_down_degrades(
    seeded: SeededDb, config_dir: Path
) -> None:
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))
    agent, s = seeded.agent(), seeded.seed
    try:
        daemon.send(agent.datagram())
        wait_until(lambda: _status(seeded, "member", s.members[1]) == "ONLINE", what="ONLINE")
        assert _status(seeded, "load_balancer", s.load_balancer) == "ONLINE"
        assert _status(seeded, "listener", s.listener) == "ONLINE"
        assert _status(seeded, "pool", s.pool) == "ONLINE"
        assert seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1

        daemon.send(agent.datagram(members={s.members[1]: MemberState.DOWN}))
        wait_until(lambda: _status(seeded, "member", s.members[1]) == "ERROR", what="ERROR")
        wait_until(lambda: _status(seeded, "pool", s.pool) == "DEGRADED", what="pool DEGRADED")
        assert _status(seeded, "load_balancer", s.load_balancer) == "DEGRADED"
        assert _status(seeded, "member", s.members[0]) == "ONLINE"
    finally:
        assert daemon.stop() == 0


# An Octavia heartbeat is one of the bad packets when octavia_compat is off (the default):
# bad_magic, as garbage is, while its amphora's native heartbeat is accepted.
@SQLITE_ONLY  # rejected before any database work
def test_bad_packets_are_counted_and_honest_traffic_still_served(
    seeded: SeededDb, config_dir: Path
) -> None:
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))
    agent = seeded.agent()
    try:
        octavia = octavia_datagram(agent, 3)
        good = agent.datagram()
        forged = bytearray(agent.datagram())
        forged[-1] ^= 1
        daemon.send(b"garbage", octavia, bytes(forged), good, good)  # the 2nd `good`: a replay
        wait_until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="accepted") == 1,
            what="one accepted",
        )
        wait_until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="replayed") == 1,
            what="one replayed",
        )
        assert daemon.metric("healthmgr_heartbeats_total", result="bad_magic") == 2
        assert daemon.metric("healthmgr_heartbeats_total", result="bad_signature") == 1
        daemon.wait_for_log("heartbeat rejected", reason="bad_signature")
        daemon.wait_for_log("heartbeat rejected", reason="bad_magic")
    finally:
        assert daemon.stop() == 0


# The signal and the final flush are the process's: SQLite only (the flush itself is the
# one every test here makes, on every database). With writer = "process" the final
# flush goes through the child, which then exits with the daemon.
@SQLITE_ONLY
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_sigterm_flushes_pending_and_exits_zero(
    seeded: SeededDb, config_dir: Path, writer: str
) -> None:
    cfg = write_config(
        config_dir / "hm.toml",
        seeded.url,
        sections={"health_manager": {"flush_interval": 30.0, "writer": writer}},
    )
    daemon = start_daemon(cfg)
    below = descendants(daemon.proc.pid)
    assert bool(below) == (writer == "process")
    daemon.send(seeded.agent().datagram())
    wait_until(
        lambda: daemon.metric("healthmgr_heartbeats_total", result="accepted") == 1, what="accepted"
    )
    assert seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 0  # not flushed yet
    assert daemon.stop(signal.SIGTERM) == 0
    assert seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1
    daemon.wait_for_log("healthmgr stopped")
    wait_until(lambda: not any(alive(p) for p in below), what="no child left")

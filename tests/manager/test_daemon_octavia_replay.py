"""Octavia agent restarts and downgrade protection, through the real daemon.

An Octavia agent keeps its sequence in memory: every restart starts again at 0.
The daemon must take the restart at once (or the amphora is failed over while
the new sequence climbs), count it and log it, and still drop the network's
duplicates. An amphora that has spoken the native format must never be
accepted in Octavia's format again (docs/octavia-compat.md).

Both are the decoder's, in memory: SQLite only. What the database holds of them
is proven on all three in tests/db: the v3 deltas added as every delta is
(test_store_flush), the native mark written (test_store_flush) and read back
into the fleet at start (test_store_fleet).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from healthmgr.wire.ids import id_str
from healthmgr.wire.values import MemberState
from tests.manager.conftest import SQLITE_ONLY, SeededDb
from tests.manager.harness import Agent, RunningDaemon, start_daemon, write_config
from tests.manager.test_daemon_octavia import KEY, octavia_datagram

# Short intervals keep it fast; the duplicate window is half an interval.
INTERVAL = 0.5
TIMEOUT = 1.5
STEP = 0.3  # between two heartbeats of the simulated agent (> the duplicate window)


def _daemon(seeded: SeededDb, config_dir: Path, timeout: float = TIMEOUT) -> RunningDaemon:
    daemon = start_daemon(
        write_config(
            config_dir / "hm.toml",
            seeded.url,
            sections={
                "health_manager": {
                    "octavia_compat": True,
                    "heartbeat_key": KEY,
                    "heartbeat_interval": INTERVAL,
                    "heartbeat_timeout": timeout,
                    "health_check_interval": 0.2,
                },
            },
        )
    )
    # Heartbeats sent before the fleet is read wait for it, and a loaded machine
    # made the first one late (past the 0.5 s interval): not what is tested here.
    daemon.wait_for_log("fleet loaded")
    return daemon


def _beat(
    daemon: RunningDaemon,
    agent: Agent,
    seqs: range | list[int],
    *,
    twice: bool = False,
    deltas: tuple[int, int] = (0, 0),
) -> int:
    """Octavia v3 heartbeats with these seqs, one per STEP; returns how many were sent."""
    for seq in seqs:
        datagram = octavia_datagram(agent, 3, seq=seq, deltas=deltas)
        daemon.send(datagram, datagram) if twice else daemon.send(datagram)
        time.sleep(STEP)
    return len(seqs)


def _accepted(daemon: RunningDaemon) -> float:
    return daemon.metric("healthmgr_heartbeats_total", result="accepted")


def _status(db: SeededDb, table: str, obj: bytes) -> str:
    return str(db.scalar(f"SELECT operating_status FROM {table} WHERE id = :i", i=id_str(obj)))


@SQLITE_ONLY
@pytest.mark.parametrize("old_highest", [3, 5000], ids=["low", "high"])
def test_octavia_agent_restarts_are_accepted_at_once_and_counted(
    seeded: SeededDb, config_dir: Path, old_highest: int
) -> None:
    daemon = _daemon(seeded, config_dir)
    agent, s = seeded.agent(), seeded.seed
    try:
        sent = _beat(daemon, agent, [0, *range(old_highest - 2, old_highest + 1)])
        daemon.until(lambda: _accepted(daemon) == sent, "the first run accepted")
        # A restart; then, within heartbeat_timeout, another. Each run lasts
        # longer than heartbeat_timeout in all, sent twice (network duplicates).
        sent += _beat(daemon, agent, range(0, 3), twice=True, deltas=(10, 100))
        sent += _beat(daemon, agent, range(0, 8), twice=True, deltas=(10, 100))
        daemon.until(lambda: _accepted(daemon) == sent, "every heartbeat accepted")
        assert daemon.metric("healthmgr_octavia_agent_restarts_total") == 2
        assert daemon.metric("healthmgr_heartbeats_total", result="replayed") == 11
        line = daemon.wait_for_log("octavia agent restarted", amphora_id=id_str(s.amphora))
        assert line["previous_seq"] == old_highest and line["seq"] == 0
        # v3 deltas of the duplicates were not added twice.
        daemon.until(
            lambda: (
                seeded.rows("SELECT bytes_in, bytes_out FROM listener_statistics") == [(110, 1100)]
            ),
            "each delta counted once",
        )
        # Alive all along: no failover, amphora still ALLOCATED and not busy.
        assert seeded.scalar("SELECT COUNT(*) FROM failover_request") == 0
        assert (
            seeded.scalar("SELECT status FROM amphora WHERE id = :i", i=id_str(s.amphora))
            == "ALLOCATED"
        )
        assert not seeded.scalar("SELECT busy FROM amphora_health")
    finally:
        assert daemon.stop() == 0


@SQLITE_ONLY
def test_captured_octavia_heartbeat_after_native_is_a_downgrade_and_changes_nothing(
    seeded: SeededDb, config_dir: Path
) -> None:
    # No heartbeat after the native ones: a long timeout keeps failover out of it.
    daemon = _daemon(seeded, config_dir, timeout=30.0)
    agent, s = seeded.agent(), seeded.seed
    member = s.members[1]
    try:
        # An attacker captures Octavia seq 1, which reports the member DOWN.
        captured = octavia_datagram(agent, 3, seq=1, members={member: MemberState.DOWN})
        daemon.send(captured)
        _beat(daemon, agent, [2, 3, 100])
        # The amphora moves to the native format.
        for _ in range(3):
            daemon.send(agent.datagram())
            time.sleep(0.05)
        daemon.until(lambda: _accepted(daemon) == 7, "Octavia and native accepted")
        daemon.until(lambda: _status(seeded, "member", member) == "ONLINE", "member ONLINE")
        daemon.until(
            lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1, "health row written"
        )
        time.sleep(0.3)  # the last flush
        before = seeded.rows("SELECT last_update FROM amphora_health")
        statuses = {
            t: _status(seeded, t, i)
            for t, i in (
                ("member", member),
                ("pool", s.pool),
                ("listener", s.listener),
                ("load_balancer", s.load_balancer),
            )
        }

        # The replay: formerly an "agent restart" that rewound the member.
        daemon.send(captured)
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="downgrade") == 1,
            "rejected as downgrade",
        )
        daemon.wait_for_log("heartbeat rejected", reason="downgrade")
        time.sleep(0.3)  # a flush would have written it by now
        assert _accepted(daemon) == 7
        assert daemon.metric("healthmgr_octavia_agent_restarts_total") == 0
        assert seeded.rows("SELECT last_update FROM amphora_health") == before
        assert {
            t: _status(seeded, t, i)
            for t, i in (
                ("member", member),
                ("pool", s.pool),
                ("listener", s.listener),
                ("load_balancer", s.load_balancer),
            )
        } == statuses
    finally:
        assert daemon.stop() == 0

"""``writer = "process"``: the real daemon flushes through a child process.

The same rows as the thread writer (health, statuses, exact statistics): on
SQLite by default, on every database in CI's ``--every-database`` pass (the
flush itself is the thread writer's, proven on all three by tests/db/); a
child killed mid-run loses nothing; SIGKILL of the daemon leaves no child
behind (SIGTERM: tests/manager/test_daemon_status.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from healthmgr.wire.ids import id_str
from healthmgr.wire.values import MemberState
from tests.manager.conftest import SQLITE_ONLY, SeededDb
from tests.manager.harness import (
    Agent,
    RunningDaemon,
    alive,
    descendants,
    start_daemon,
    wait_until,
    write_config,
)

PROCESS = {"health_manager": {"writer": "process"}}
STEP = (1000, 3000, 10, 1)  # counters added by each heartbeat


def writer_child(daemon: RunningDaemon) -> int:
    """The writer process: the daemon's child running ``multiprocessing.spawn``."""
    for pid in descendants(daemon.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            return pid
    raise AssertionError("no writer process")


def status(db: SeededDb, table: str, obj_id: bytes) -> str:
    return str(db.scalar(f"SELECT operating_status FROM {table} WHERE id = :i", i=id_str(obj_id)))


def stats(db: SeededDb, listener: bytes, amphora: bytes) -> tuple[int, ...] | None:
    rows = db.rows(
        "SELECT bytes_in, bytes_out, total_connections, request_errors, last_seq"
        " FROM listener_statistics WHERE listener_id = :l AND amphora_id = :a",
        l=id_str(listener),
        a=id_str(amphora),
    )
    return tuple(rows[0]) if rows else None


def expected(seq: int) -> tuple[int, ...]:
    return (*(seq * c for c in STEP), seq)


def wait_written(db: SeededDb, agent: Agent, seq: int) -> None:
    """Until the statistics of heartbeat ``seq`` (and the ones before) are in the database."""
    listener = db.seed.listener
    wait_until(lambda: stats(db, listener, agent.amphora) == expected(seq), what=f"seq {seq}")


def start(db: SeededDb, config_dir: Path) -> tuple[RunningDaemon, Agent]:
    """A daemon with the writer process, and an agent whose counters move by STEP."""
    agent = db.agent()
    agent.step = STEP
    return start_daemon(write_config(config_dir / "hm.toml", db.url, sections=PROCESS)), agent


# One daemon for both: the writes, then SIGKILL of the daemon, which cannot stop its child
# (its exit 0 on SIGTERM with the child's last flush: test_daemon_status.py,
# test_sigterm_flushes_pending_and_exits_zero[process]).
@SQLITE_ONLY  # every database with --every-database
def test_process_writer_writes_exact_rows_and_a_sigkilled_daemon_leaves_no_writer(
    seeded: SeededDb, config_dir: Path
) -> None:
    daemon, agent = start(seeded, config_dir)
    s = seeded.seed
    try:
        child = writer_child(daemon)
        for _ in range(3):
            daemon.send(agent.datagram())
        wait_written(seeded, agent, 3)
        assert seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1
        assert status(seeded, "load_balancer", s.load_balancer) == "ONLINE"
        assert status(seeded, "member", s.members[1]) == "ONLINE"

        daemon.send(agent.datagram(members={s.members[1]: MemberState.DOWN}))
        wait_until(lambda: status(seeded, "member", s.members[1]) == "ERROR", what="ERROR")
        wait_until(lambda: status(seeded, "pool", s.pool) == "DEGRADED", what="DEGRADED")
        assert stats(seeded, s.listener, agent.amphora) == expected(4)
        assert writer_child(daemon) == child  # one child did it all
        assert daemon.metric("healthmgr_flush_failures_total") == 0
        below = descendants(daemon.proc.pid)
        assert child in below
        daemon.kill(signal.SIGKILL)  # the child notices
        daemon.proc.wait()
        wait_until(lambda: not any(alive(p) for p in below), what="children gone after SIGKILL")
    finally:
        daemon.stop()  # after a failure: SIGTERM, the child stopped by its daemon


@SQLITE_ONLY  # the child's death is the process's, not the database's
def test_writer_killed_mid_run_loses_nothing_and_fails_nothing_over(
    seeded: SeededDb, config_dir: Path
) -> None:
    daemon, agent = start(seeded, config_dir)
    try:
        daemon.send(agent.datagram())
        wait_written(seeded, agent, 1)
        first = writer_child(daemon)
        os.kill(first, signal.SIGKILL)
        for _ in range(4):
            daemon.send(agent.datagram())
        wait_written(seeded, agent, 5)
        daemon.wait_for_log("writer process died; its rows are kept for a new one")
        assert writer_child(daemon) != first
        assert daemon.count("failover requested") == 0
        assert status(seeded, "member", seeded.seed.members[0]) == "ONLINE"
    finally:
        assert daemon.stop() == 0

"""The manager's judgment under faults, against the real daemon and real databases.

Cases of issue 7 that need no network fault: a mass outage that arrives and
leaves gradually (the breaker's edges), the failover runner owning a database
error while it records an outcome, a manager killed mid-failover (leases and
take-over, no orphaned command), and the reason of every verdict. Short
intervals keep them fast: heartbeat_interval 0.5 s, heartbeat_timeout 2-3 s.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from healthmgr.chaos.relay import Relay
from healthmgr.wire.ids import id_str
from tests.db.factories import make_fleet
from tests.fault.conftest import server_address, through
from tests.manager.conftest import SQLITE_ONLY, SeededDb, agent_for, ago
from tests.manager.harness import (
    Agent,
    Beater,
    RunningDaemon,
    start_daemon,
    wait_until,
    write_config,
)
from tests.manager.test_daemon_outage import sqlite_locked


@contextmanager
def _refused(relay: Relay) -> Iterator[None]:
    relay.refuse()
    try:
        yield
    finally:
        relay.passthrough()


INTERVAL = 0.5
TIMEOUT = 2.0


def config(
    db: SeededDb,
    config_dir: Path,
    name: str = "hm.toml",
    url: str | None = None,
    **sections: dict[str, Any],
) -> Path:
    hm = {
        "heartbeat_interval": INTERVAL,
        "heartbeat_timeout": TIMEOUT,
        "health_check_interval": 0.2,
        "manager_id": "hm-a",
        **sections.pop("health_manager", {}),
    }
    return write_config(
        config_dir / name, url or db.url, sections={"health_manager": hm, **sections}
    )


def requests(db: SeededDb) -> list[Any]:
    return db.rows(
        "SELECT id, amphora_id, reason, state, attempts, owner, requested_by"
        " FROM failover_request ORDER BY id"
    )


def statuses(db: SeededDb, amphorae: list[bytes]) -> list[str]:
    return [
        str(db.scalar("SELECT status FROM amphora WHERE id = :i", i=id_str(a))) for a in amphorae
    ]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- case 3: the breaker's edges ----------------------------------------------------


# The breaker's edges are the checker's logic: SQLite only. Its database writes
# (FAILOVER_STOPPED and back) are proven on all three by tests/db/test_store_claims.py
# (and through the daemon by test_daemon_breaker.py, with --every-database).
@SQLITE_ONLY
def test_a_mass_outage_arriving_and_leaving_gradually_fails_over_nothing(
    seeded: SeededDb, config_dir: Path
) -> None:
    """30 amphorae, threshold 8: 12 go silent a few per health check over a
    whole heartbeat_timeout; the breaker opens and nothing is failed over. They
    come back one by one across a heartbeat round: nothing is failed over as
    the breaker closes. Then one dies on its own: it is failed over (the
    breaker did close)."""
    fleet = make_fleet(seeded.engine, 30, with_health=False)
    agents = [agent_for(s) for s in fleet]
    daemon = start_daemon(config(seeded, config_dir, health_manager={"failover_threshold": 8}))
    try:
        with Beater([daemon], agents, interval=INTERVAL) as beater:
            daemon.until(
                lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 30,
                what="all reported",
            )
            daemon.wait_judging()  # past the start-up grace
            outage = agents[:12]
            for agent in outage:  # 12 over TIMEOUT seconds
                beater.remove(agent)
                time.sleep(TIMEOUT / 12)
            daemon.wait_for_log("failover circuit breaker open: no failover starts")
            daemon.until(
                lambda: (
                    statuses(seeded, [a.amphora for a in outage]).count("FAILOVER_STOPPED") == 12
                ),
                what="all 12 FAILOVER_STOPPED",
            )
            time.sleep(TIMEOUT)
            for agent in outage:  # back one by one, across a heartbeat round and more
                beater.agents.append(agent)
                time.sleep(INTERVAL / 3)
            daemon.wait_for_log("failover circuit breaker closed", timeout=20)
            daemon.until(
                lambda: statuses(seeded, [a.amphora for a in outage]).count("ALLOCATED") == 12,
                what="all back to ALLOCATED",
            )
            assert requests(seeded) == []
            lone = agents[20]
            beater.remove(lone)
            daemon.until(lambda: len(requests(seeded)) == 1, what="the lone death failed over")
        (req,) = requests(seeded)
        assert (req.amphora_id, req.reason) == (id_str(lone.amphora), "heartbeat_timeout")
        assert daemon.metric("healthmgr_failovers_total", outcome="stopped_by_breaker") == 12
    finally:
        assert daemon.stop() == 0


# --- case 6: a database error while an outcome is recorded ------------------------


# The runner's retries are proven in-process (test_failover_drivers.py, MockClock); here
# the wiring through the real daemon under both kinds of outage: SQLite locked, and a
# server refusing connections (PostgreSQL; MariaDB's refused connections are proven in
# tests/fault/test_db_bounds.py).
@pytest.mark.databases("sqlite", "postgresql")
def test_a_database_error_while_recording_an_outcome_is_owned_by_the_runner(
    seeded: SeededDb, config_dir: Path, tmp_path: Path
) -> None:
    """The exec driver runs `sleep 1.5` while the database is unavailable (SQLite:
    locked by another process; the server: connections refused by the relay the
    daemon reaches it through) until three attempts to record the outcome failed:
    the daemon does not crash, records SUCCEEDED once the database is back (not
    ABANDONED), keeps the amphora busy, and exits 0 with its final flush."""
    seeded.execute(
        "INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES (:a, :t, :b)",
        a=id_str(seeded.seed.amphora),
        t=ago(3600),
        b=False,
    )
    started = tmp_path / "started"
    script = _script(tmp_path / "failover.sh", f"touch {started}\nsleep 1.5\nexit 0\n")
    sqlite = seeded.url.startswith("sqlite")
    relay = None if sqlite else Relay(server_address(seeded.url)).start()
    daemon_url = (
        seeded.url + "?timeout=0.2" if relay is None else through(seeded.url, relay.address)
    )
    daemon = start_daemon(
        config(
            seeded,
            config_dir,
            url=daemon_url,
            failover={"driver": "exec", "command": [str(script)], "max_attempts": 1},
            database={"timeout": 1.0},
        )
    )
    try:
        daemon.until(started.exists, what="the failover command started", timeout=20)
        outage = sqlite_locked(seeded.url) if relay is None else _refused(relay)
        with outage:
            # Held through three failed attempts to record it (0.5, 1 s apart): the runner
            # keeps the outcome and retries; it neither drops it nor crashes.
            daemon.until(
                lambda: daemon.count("could not record failover outcome; retrying") >= 3,
                what="three attempts to record the outcome",
                timeout=15,
            )
            assert daemon.proc.poll() is None  # still serving
        daemon.until(
            lambda: [r.state for r in requests(seeded)] == ["SUCCEEDED"],
            what="SUCCEEDED recorded after the outage",
            timeout=20,
        )
        assert seeded.scalar(
            "SELECT busy FROM amphora_health WHERE amphora_id = :a", a=id_str(seeded.seed.amphora)
        ) in (True, 1)
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.lines[-20:])
        if relay is not None:
            relay.close()
    assert not [e for e in daemon.events() if "Traceback" in str(e) or e.get("exception")]
    assert not [e for e in daemon.events() if e.get("event", "").startswith("pending writes lost")]


# --- case 7: a manager killed during a failover -------------------------------------


# The lease and its take-over are proven on all three by tests/db/test_store_claims.py;
# here the processes: the orphan killed with its manager, the take-over by another.
@pytest.mark.databases("mysql")
def test_a_killed_manager_leaves_a_lease_that_is_taken_over_and_no_orphan(
    server_db_url: str, config_dir: Path, tmp_path: Path
) -> None:
    """Manager A is SIGKILLed while its exec failover runs: the command does
    not outlive it (the guard ends it), and manager B takes the request over
    once A's lease expires and runs the command again, which now succeeds."""
    from tests.db.factories import make_seed_lb
    from tests.manager.conftest import migrated_engine

    engine = migrated_engine(server_db_url)
    seed = make_seed_lb(engine, last_update=ago(3600))
    db = SeededDb(server_db_url, engine, seed)
    calls, pids = tmp_path / "calls", tmp_path / "pids"
    script = _script(
        tmp_path / "failover.sh",
        f'echo "$@" >> {calls}\n'
        f"if [ $(wc -l < {calls}) -gt 1 ]; then exit 0; fi\n"
        f"echo $$ >> {pids}\nexec sleep 60\n",
    )
    failover = {
        "driver": "exec",
        "command": [str(script), "{request_id}", "{attempt}"],
        "max_attempts": 2,
        "lease": 2.0,
        "timeout": 120,
    }
    a = start_daemon(config(db, config_dir, "a.toml", failover=failover))
    b: RunningDaemon | None = None
    try:
        a.until(pids.exists, what="A's command started", timeout=20)
        (req,) = requests(db)
        assert (req.state, req.owner) == ("RUNNING", "hm-a")
        orphan = int(pids.read_text().split()[0])
        a.kill(signal.SIGKILL)
        a.proc.wait(10)
        wait_until(lambda: not _alive(orphan), timeout=5, what="the orphaned command killed")
        b = start_daemon(
            config(
                db, config_dir, "b.toml", failover=failover, health_manager={"manager_id": "hm-b"}
            )
        )
        b.until(
            lambda: [r.state for r in requests(db)] == ["SUCCEEDED"],
            what="B took the request over and succeeded",
            timeout=30,
        )
        (req,) = requests(db)
        assert req.id == req.id and req.owner is None
        assert req.attempts >= 2  # counted on from A's attempt
        event = b.wait_for_log("taking over a failover request")
        assert event["previous_owner"] == "hm-a"
        assert b.metric("healthmgr_failovers_total", outcome="taken_over") == 1
        assert len(calls.read_text().splitlines()) == 2
    finally:
        if b is not None:
            assert b.stop() == 0
        if a.proc.poll() is None:
            a.stop()
        engine.dispose()


# --- case 9: every verdict has a reason ---------------------------------------------


# The verdict and its log line are the manager's logic: SQLite only. The reason read
# from the database is proven on all three by tests/db/test_store_claims.py.
@SQLITE_ONLY
def test_a_listener_count_mismatch_is_logged_counted_and_named_as_the_reason(
    seeded: SeededDb, config_dir: Path
) -> None:
    """HAProxy lost its listener: the amphora keeps beating with none. Every
    such heartbeat is a mismatch (logged with the counts, counted), its health
    goes stale, and the failover says why."""
    agent: Agent = seeded.agent()
    daemon = start_daemon(config(seeded, config_dir))
    try:
        daemon.send(agent.datagram())
        daemon.until(
            lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1, what="reported"
        )
        deadline = time.monotonic() + 12
        while not requests(seeded) and time.monotonic() < deadline:
            daemon.send(agent.datagram(listeners=False))
            time.sleep(INTERVAL)
        (req,) = requests(seeded)
        assert req.reason == "listener_count_mismatch"
        event = daemon.wait_for_log(
            "listener count mismatch: amphora_health not refreshed "
            "(HAProxy may have failed to load part of its "
            "configuration)"
        )
        assert (event["amphora_id"], event["lb_id"]) == (
            id_str(agent.amphora),
            id_str(seeded.seed.load_balancer),
        )
        assert (event["reported"], event["expected"]) == (0, 1)
        verdict = daemon.wait_for_log("failover verdict", amphora_id=id_str(agent.amphora))
        assert verdict["reason"] == "listener_count_mismatch"
        assert daemon.metric("healthmgr_listener_count_mismatches_total") >= 2
        assert (
            daemon.metric(
                "healthmgr_failover_verdicts_total",
                verdict="failover",
                reason="listener_count_mismatch",
            )
            == 1
        )
    finally:
        assert daemon.stop() == 0


# --- case 2: a flood the socket cannot hold -----------------------------------------

FLOODER = Path(__file__).resolve().parents[1] / "bench" / "flood.py"


# The flood fills the socket, not the database: one server (40 amphorae flushed while
# the flood takes the CPU).
@pytest.mark.databases("postgresql")
def test_a_flood_that_overflows_the_socket_fails_over_no_live_amphora(
    seeded: SeededDb, config_dir: Path, tmp_path: Path
) -> None:
    """40 amphorae beat every 0.5 s while another process floods the port with
    garbage and forgeries for two heartbeat timeouts (longer than a live amphora
    may go unheard), into a receive buffer too small to hold it (sock_rlimit
    64 KiB): the kernel drops honest heartbeats with the junk, the manager knows
    it cannot see (kernel_drops) and fails over nothing, during the flood or
    after it."""
    import json
    import subprocess
    import sys

    fleet = make_fleet(seeded.engine, 40, with_health=False)
    agents = [agent_for(s) for s in fleet]
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([a.amphora.hex() for a in agents]))
    daemon = start_daemon(config(seeded, config_dir, health_manager={"sock_rlimit": 65536}))
    try:
        with Beater([daemon], agents, INTERVAL):
            daemon.until(
                lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 40,
                what="all reported",
            )
            daemon.wait_judging()  # past the start-up grace
            host, port = daemon.address
            flood = subprocess.run(
                [
                    sys.executable,
                    str(FLOODER),
                    "--flooder",
                    "--target",
                    f"{host}:{port}",
                    "--ids",
                    str(ids),
                    "--rate",
                    "0",
                    "--seconds",
                    str(2 * TIMEOUT),
                    "--mix",
                    "garbage=0.5,known=0.5",
                    "--sources",
                    "4",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            sent = json.loads(flood.stdout)["sent"]
            time.sleep(2 * TIMEOUT)  # the grace after the flood, and checks after it
        assert requests(seeded) == []
        assert daemon.metric("healthmgr_kernel_drops_total") > 0
        assert daemon.metric("healthmgr_impairments_total", reason="kernel_drops") >= 1
        event = daemon.wait_for_log(
            "manager impaired: no failover verdict until it has been healthy for heartbeat_timeout"
        )
        assert "kernel_drops" in event["reasons"]
        assert sent > 10_000
    finally:
        assert daemon.stop() == 0

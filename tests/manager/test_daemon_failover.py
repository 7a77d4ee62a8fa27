"""Failover through the real daemon: dead amphorae, startup grace, drivers, PENDING_*.

Every test runs ``healthmgr serve`` as a subprocess with small intervals
(``heartbeat_timeout`` 2-3 s, ``health_check_interval`` 0.3 s) and reads the
outcome from the database: ``failover_request`` rows, ``amphora_health.busy``,
``load_balancer.provisioning_status``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from healthmgr.db.models import AmphoraHealth
from healthmgr.wire.ids import Id, id_str
from tests.db.factories import make_seed_lb
from tests.manager.conftest import SQLITE_ONLY, SeededDb, agent_for, ago
from tests.manager.harness import Beater, RunningDaemon, start_daemon, wait_until, write_config

TIMEOUT = 2.0
CHECK_INTERVAL = 0.3


def _config(seeded: SeededDb, config_dir: Path, **failover: Any) -> Path:
    return write_config(
        config_dir / "hm.toml",
        seeded.url,
        sections={
            "health_manager": {
                "heartbeat_timeout": TIMEOUT,
                "health_check_interval": CHECK_INTERVAL,
                "manager_id": "hm-test-a",
                # Several amphorae die together on purpose here; the breaker
                # has its own tests (test_daemon_breaker.py).
                "failover_threshold": "off",
            },
            "failover": failover or {"driver": "record"},
        },
    )


def _requests(db: SeededDb) -> list[sa.Row]:
    return db.rows(
        "SELECT id, amphora_id, load_balancer_id, reason, requested_by, state, attempts,"
        " last_error FROM failover_request ORDER BY id"
    )


def _busy(db: SeededDb, amphora: Id) -> bool | None:
    value = db.scalar("SELECT busy FROM amphora_health WHERE amphora_id = :a", a=id_str(amphora))
    return None if value is None else bool(value)


def _lb_provisioning(db: SeededDb, lb: Id) -> str:
    sql = "SELECT provisioning_status FROM load_balancer WHERE id = :i"
    return str(db.scalar(sql, i=id_str(lb)))


def _stale_health(db: SeededDb, amphora: Id, seconds: float = 3600.0) -> None:
    """An amphora_health row that is already stale when the manager starts."""
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(AmphoraHealth).values(
                amphora_id=id_str(amphora), last_update=ago(seconds), busy=False
            )
        )


def _wait_request(db: SeededDb, count: int = 1, what: str = "failover request") -> list[sa.Row]:
    return wait_until(lambda: len(_requests(db)) >= count and _requests(db), what=what)


def _stop(daemon: RunningDaemon) -> None:
    assert daemon.stop() == 0, "\n".join(daemon.lines[-20:])


# --- record driver ------------------------------------------------------------

# The checker's judgment through the real process: SQLite only. What the database does
# in it (what counts as stale, PENDING_* left out, the claim and its request row) is
# proven on all three by tests/db/test_store_claims.py, and the claims of several real
# managers on both servers by test_daemon_multi.py.


@SQLITE_ONLY
def test_dead_amphora_is_failed_over_once_and_a_live_one_never(
    seeded: SeededDb, config_dir: Path
) -> None:
    live_seed = make_seed_lb(seeded.engine, operating_status="OFFLINE", with_health=False)
    dead, live = seeded.agent(), agent_for(live_seed)
    daemon = start_daemon(_config(seeded, config_dir))
    try:
        with Beater([daemon], [dead, live]) as beater:
            wait_until(
                lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 2,
                what="both amphorae reported",
            )
            beater.remove(dead)  # the amphora dies; its neighbour keeps beating
            _wait_request(seeded)  # claimed: RUNNING while the record driver runs
            daemon.wait_for_log("failover requested")  # handed off: PENDING
            _several_health_checks()  # with the live one beating: still one request
            (request,) = _requests(seeded)
        assert request.amphora_id == id_str(dead.amphora)
        assert request.load_balancer_id == id_str(seeded.seed.load_balancer)
        assert request.state == "PENDING"
        assert request.requested_by == "hm-test-a"
        assert request.reason == "heartbeat_timeout"
        assert request.attempts == 1  # the record driver ran once and handed it off
        assert len(_requests(seeded)) == 1
        assert _busy(seeded, dead.amphora) is True
        assert _busy(seeded, live.amphora) is False
        assert daemon.metric("healthmgr_failovers_total", outcome="requested") == 1
        assert daemon.metric("healthmgr_failovers_total", outcome="handed_off") == 1
        # The record driver only hands off: the API's worker owns the load balancer now.
        assert _lb_provisioning(seeded, seeded.seed.load_balancer) == "ACTIVE"
    finally:
        _stop(daemon)


@SQLITE_ONLY
def test_startup_grace_then_stale_amphorae_failed_over_except_pending_update(
    seeded: SeededDb, config_dir: Path
) -> None:
    """Two amphorae already stale in the database when the manager starts: the
    one whose load balancer is ACTIVE is failed over once a full
    heartbeat_timeout has passed since the start; the one whose load balancer
    is PENDING_UPDATE is not, until the API's worker sets it ACTIVE again."""
    active = make_seed_lb(seeded.engine, last_update=ago(3600))
    pending = make_seed_lb(
        seeded.engine, last_update=ago(3600), provisioning_status="PENDING_UPDATE"
    )
    daemon = start_daemon(_config(seeded, config_dir))
    try:
        serving = daemon.log_time("healthmgr serving")
        # The checker has seen one candidate (it runs at once) and started nothing...
        wait_until(lambda: daemon.metric("healthmgr_stale_amphorae") == 1, what="stale seen")
        assert _requests(seeded) == []
        assert _busy(seeded, active.amphora) is False
        # ...until heartbeat_timeout has passed since the manager started.
        (request,) = _wait_request(seeded, what="the ACTIVE one failed over")
        failing_over = daemon.log_time("failing over amphora", amphora_id=id_str(active.amphora))
        assert request.amphora_id == id_str(active.amphora)
        # Order, with a wide margin: the grace clock starts just before "serving".
        assert failing_over - serving >= TIMEOUT - 1.0

        _several_health_checks()
        assert len(_requests(seeded)) == 1
        assert _busy(seeded, pending.amphora) is False
        assert daemon.metric("healthmgr_stale_amphorae") == 0  # PENDING_*: not a candidate
        seeded.execute(
            "UPDATE load_balancer SET provisioning_status = 'ACTIVE' WHERE id = :i",
            i=id_str(pending.load_balancer),
        )
        requests = _wait_request(seeded, 2, what="the formerly pending one failed over")
        assert requests[1].amphora_id == id_str(pending.amphora)
    finally:
        _stop(daemon)


def _several_health_checks() -> None:
    """Let four health-check intervals pass (a pause, not a timing assertion)."""
    time.sleep(4 * CHECK_INTERVAL)


# --- exec driver -------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "failover.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# The driver's retries, timeout and kill do not depend on the database: SQLite only (the
# outcomes it records are tested on all three in tests/db/test_store_claims.py).
@SQLITE_ONLY
def test_exec_driver_success_failure_and_timeout(
    seeded: SeededDb, config_dir: Path, tmp_path: Path
) -> None:
    """Three stale amphorae, one operator command that succeeds for the first,
    runs ``false`` for the second and hangs for the third (max_attempts 2)."""
    ok, failing, hanging = seeded.seed, make_seed_lb(seeded.engine), make_seed_lb(seeded.engine)
    _stale_health(seeded, ok.amphora)
    for seed in (failing, hanging):
        seeded.execute(
            "UPDATE amphora_health SET last_update = :t WHERE amphora_id = :a",
            t=ago(3600),
            a=id_str(seed.amphora),
        )
    calls, pids = tmp_path / "calls.txt", tmp_path / "pids.txt"
    script = _script(
        tmp_path,
        f'echo "$*" >> {calls}\n'
        'case "$1" in\n'
        f"  {id_str(ok.amphora)}) exit 0 ;;\n"
        f"  {id_str(failing.amphora)}) exec false ;;\n"
        f"  *) echo $$ >> {pids}; exec sleep 60 ;;\n"
        "esac\n",
    )
    cfg = _config(
        seeded,
        config_dir,
        driver="exec",
        timeout=0.5,
        max_attempts=2,
        retry_backoff=0.1,
        command=[
            str(script),
            "{amphora_id}",
            "{load_balancer_id}",
            "{reason}",
            "{attempt}",
            "{request_id}",
        ],
    )
    daemon = start_daemon(cfg)
    try:
        wait_until(
            lambda: sorted(r.state for r in _requests(seeded)) == ["FAILED", "FAILED", "SUCCEEDED"],
            what="one SUCCEEDED and two FAILED requests",
        )
        by_amphora = {r.amphora_id: r for r in _requests(seeded)}
        done, failed, timed_out = (by_amphora[id_str(s.amphora)] for s in (ok, failing, hanging))

        # Success: the command got the ids, the request is SUCCEEDED after one attempt.
        assert (
            f"{id_str(ok.amphora)} {id_str(ok.load_balancer)} heartbeat_timeout 1 {done.id}"
            in calls.read_text().splitlines()
        )
        assert (done.state, done.attempts, done.last_error) == ("SUCCEEDED", 1, None)
        assert _lb_provisioning(seeded, ok.load_balancer) == "ACTIVE"

        # `false` twice: FAILED after 2 attempts, the load balancer goes ERROR (as Octavia).
        assert (failed.state, failed.attempts) == ("FAILED", 2)
        assert failed.last_error == f"{script} failed (exit status 1)"
        assert _lb_provisioning(seeded, failing.load_balancer) == "ERROR"

        # A command that hangs is killed at the timeout; that is a failure like any other.
        assert (timed_out.state, timed_out.attempts) == ("FAILED", 2)
        assert "timed out after 0.5s" in timed_out.last_error
        assert _lb_provisioning(seeded, hanging.load_balancer) == "ERROR"
        for pid in map(int, pids.read_text().split()):
            wait_until(lambda pid=pid: not _alive(pid), what=f"hanging command {pid} killed")

        # Busy stays set either way: replaced, or an operator's turn; nobody claims again.
        assert all(_busy(seeded, s.amphora) is True for s in (ok, failing, hanging))
        assert all(r.requested_by == "hm-test-a" for r in by_amphora.values())
        daemon.wait_for_log(
            "failover failed; load balancer set to provisioning_status ERROR",
            amphora_id=id_str(failing.amphora),
            attempts=2,
        )
        assert daemon.metric("healthmgr_failovers_total", outcome="succeeded") == 1
        assert daemon.metric("healthmgr_failovers_total", outcome="failed") == 2
        assert daemon.metric("healthmgr_failovers_total", outcome="retried") == 2
    finally:
        _stop(daemon)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@SQLITE_ONLY
def test_in_flight_failover_is_abandoned_cleanly_at_shutdown(
    seeded: SeededDb, config_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM while a failover command runs: after failover.shutdown_grace the
    command is killed, the request is ABANDONED and busy is cleared so another
    manager can claim the amphora; the daemon still exits 0."""
    _stale_health(seeded, seeded.seed.amphora)
    started = tmp_path / "started"
    script = _script(tmp_path, f"touch {started}\nexec sleep 60\n")
    cfg = _config(
        seeded,
        config_dir,
        driver="exec",
        timeout=60,
        max_attempts=1,
        command=[str(script)],
        shutdown_grace=0.5,
    )
    daemon = start_daemon(cfg)
    wait_until(started.exists, what="the failover command started")
    assert daemon.stop() == 0, "\n".join(daemon.lines[-20:])
    (request,) = _requests(seeded)
    assert request.state == "ABANDONED", "\n".join(daemon.lines[-15:])
    assert request.last_error == "manager shutting down"
    assert _busy(seeded, seeded.seed.amphora) is False
    daemon.wait_for_log("healthmgr stopped")

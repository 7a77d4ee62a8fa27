"""Operating the real daemon: signals, reload, startup errors, IPv6."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from healthmgr.db.migrate import upgrade
from healthmgr.wire.ids import id_str
from tests.cli.clitest import cli, one_error_line
from tests.manager.conftest import SQLITE_ONLY, SeededDb
from tests.manager.harness import (
    MASTER,
    MASTER_2,
    RunningDaemon,
    read_config,
    start_daemon,
    write_config,
)


def _accepted(daemon: RunningDaemon, n: int) -> Callable[[], bool]:
    return lambda: daemon.metric("healthmgr_heartbeats_total", result="accepted") == n


# Signals and keys do not depend on the database: SQLite only.
@SQLITE_ONLY
def test_sighup_adds_a_master_key_and_sigint_exits_zero(seeded: SeededDb, config_dir: Path) -> None:
    path = write_config(config_dir / "hm.toml", seeded.url)
    running = read_config(path)
    agent = seeded.agent()
    agent.master = MASTER_2  # its key derives from a master the daemon does not have yet
    daemon = start_daemon(path)
    try:
        daemon.send(agent.datagram())
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="unknown_key") == 1,
            what="rejected: unknown_key",
        )
        daemon.wait_for_log("heartbeat rejected", reason="unknown_key")

        # Key rotation, step one: add the new master key (same ports), then SIGHUP.
        write_config(
            path,
            seeded.url,
            masters=(MASTER, MASTER_2),
            sections={
                "health_manager": {"bind_port": running["health_manager"]["bind_port"]},
                "metrics": {"bind": running["metrics"]["bind"]},
                "failover": {"timeout": 7.0},
            },
        )
        daemon.kill(signal.SIGHUP)
        # A changed [failover] builds a new driver (the old one is closed when idle).
        daemon.wait_for_log("configuration reloaded", master_keys=2, failover_driver="replaced")
        daemon.kill(signal.SIGHUP)  # nothing changed: the driver is kept
        daemon.wait_for_log("configuration reloaded", master_keys=2, failover_driver="kept")
        daemon.send(agent.datagram())
        daemon.until(_accepted(daemon, 1), what="accepted after SIGHUP")
        daemon.until(
            lambda: (
                seeded.scalar(
                    "SELECT COUNT(*) FROM amphora_health WHERE amphora_id = :a",
                    a=id_str(agent.amphora),
                )
                == 1
            ),
            what="amphora_health written",
        )
        assert daemon.proc.poll() is None  # a reload is not a restart
    finally:
        code = daemon.stop(signal.SIGINT)
    assert code == 0
    daemon.wait_for_log("shutting down", signal="SIGINT")
    daemon.wait_for_log("healthmgr stopped")


def _serve(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "healthmgr", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_startup_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    """Each bad start: a non-zero exit and exactly one line on stderr saying what to fix.
    (The cases run at the same time: each is a process start. An empty database on
    PostgreSQL and MariaDB: tests/db/test_migrations.py::test_check_current_on_an_empty_database,
    the same check_current; its status and line in serve: the SQLite case here.)"""
    migrated = f"sqlite:///{tmp_path / 'ok.db'}"
    upgrade(migrated)
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    busy_port = busy.getsockname()[1]

    def config(name: str, url: str, **hm: object) -> Path:
        return write_config(tmp_path / f"{name}.toml", url, sections={"health_manager": hm})

    busy_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy_tcp.bind(("127.0.0.1", 0))
    busy_tcp.listen()
    metrics_port = busy_tcp.getsockname()[1]
    empty = config("empty", f"sqlite:///{tmp_path / 'empty.db'}")
    metrics = write_config(
        tmp_path / "metrics.toml",
        migrated,
        sections={"metrics": {"bind": f"127.0.0.1:{metrics_port}"}},
    )
    # Exit statuses: docs/cli.md (3 configuration, 4 database unreachable, 5 schema, 1 other).
    # (A bad configuration, status 3: the next test.)
    cases = {
        # name: (config, expected exit status, text the line must contain)
        "unreachable database": (config("unreachable", "postgresql://127.0.0.1:1/x"), 4,
                                 "cannot reach the database (PostgreSQL at 127.0.0.1:1/x)"),
        # The hint keeps the user's --config, so following it upgrades this database.
        "empty SQLite database": (empty, 5, f"run `healthmgr db upgrade --config {empty}`"),
        "port in use": (config("port", migrated, bind_port=busy_port), 1,
                        f"cannot bind 127.0.0.1:{busy_port}: Address already in use"),
        "metrics port in use": (metrics, 1, "cannot bind the metrics endpoint ([metrics] bind = "
                                f"127.0.0.1:{metrics_port}): Address already in use"),
    }  # fmt: skip
    try:
        procs = {name: _serve(cfg) for name, (cfg, _, _) in cases.items()}
        results = {name: (p.wait(60), p.stderr.read()) for name, p in procs.items()}
    finally:
        busy.close()
        busy_tcp.close()
    for name, (_, status, text) in cases.items():
        code, stderr = results[name]
        lines = stderr.strip().splitlines()
        assert code == status, f"{name}: exit {code}, stderr: {stderr}"
        assert len(lines) == 1, f"{name}: expected one line, got: {stderr}"
        assert lines[0].startswith("healthmgr: error: "), f"{name}: {lines[0]}"
        assert text in lines[0], f"{name}: {lines[0]!r} does not say {text!r}"
        assert "Traceback" not in stderr


def test_configuration_errors_are_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before the daemon's logging, database or sockets are set up: the same
    command in this process proves what a process would (the previous test's processes
    prove the statuses and stderr of `python -m healthmgr serve`)."""
    url = f"sqlite:///{tmp_path / 'hm.db'}"
    cases = {
        "bad option": ({"bind_port": 70000}, "health_manager.bind_port: 70000 is not a valid port"),
        "bad value type": ({"heartbeat_timeout": "soon"}, "health_manager.heartbeat_timeout"),
    }
    for name, (hm, text) in cases.items():
        path = write_config(tmp_path / f"{name}.toml", url, sections={"health_manager": hm})
        done = cli("serve", "--config", str(path))
        assert done.returncode == 3, f"{name}: exit {done.returncode}, stderr: {done.stderr}"
        assert text in one_error_line(done), f"{name}: {done.stderr!r} does not say {text!r}"
        assert "Traceback" not in done.stderr
        assert capsys.readouterr() == ("", ""), f"{name}: printed outside the command's streams"


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
@SQLITE_ONLY  # the socket's address family, not the database
def test_ipv6_bind_receives_heartbeats(seeded: SeededDb, config_dir: Path) -> None:
    cfg = write_config(
        config_dir / "hm.toml", seeded.url, sections={"health_manager": {"bind_ip": "::1"}}
    )
    daemon = start_daemon(cfg)
    try:
        assert daemon.wait_serving()["bind"].startswith("::1:")
        daemon.send(seeded.agent().datagram())  # from an AF_INET6 socket
        daemon.until(_accepted(daemon, 1), what="accepted over IPv6")
        daemon.until(
            lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1,
            what="amphora_health written",
        )
    finally:
        assert daemon.stop() == 0

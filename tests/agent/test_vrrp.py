"""The keepalived check (agent/vrrp.py) against real processes: a stand-in for keepalived."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.vrrp import KeepalivedCheck, process_running


@pytest.fixture
def keepalived() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_running_process_allows_heartbeats(
    tmp_path: Path, keepalived: subprocess.Popen[bytes]
) -> None:
    pid_file = tmp_path / "keepalived.pid"
    pid_file.write_text(f"{keepalived.pid}\n")
    assert KeepalivedCheck(pid_file).problem() is None


def test_dead_process_stops_heartbeats(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "300"])
    pid_file = tmp_path / "keepalived.pid"
    pid_file.write_text(f"{proc.pid}\n")
    proc.kill()
    # Not reaped yet: a zombie has exited, it only keeps its pid.
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    assert os.kill(proc.pid, 0) is None  # signal 0 alone would say "running"
    assert KeepalivedCheck(pid_file).problem() == (
        f"keepalived (pid {proc.pid} from {pid_file}) is not running"
    )
    proc.wait()
    assert "is not running" in (KeepalivedCheck(pid_file).problem() or "")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is missing"), ("", "holds no pid"), ("keepalived\n", "holds no pid"),
     ("0\n", "holds no pid"), ("-1\n", "holds no pid")],
)  # fmt: skip
def test_unusable_pid_file_stops_heartbeats(
    tmp_path: Path, content: str | None, message: str
) -> None:
    pid_file = tmp_path / "keepalived.pid"
    if content is not None:
        pid_file.write_text(content)
    problem = KeepalivedCheck(pid_file).problem()
    assert problem is not None and message in problem and str(pid_file) in problem


def test_config_file_gates_the_check_as_in_octavia(tmp_path: Path) -> None:
    # Octavia writes keepalived's config only for ACTIVE_STANDBY: without it
    # (a SINGLE amphora) heartbeats go out whatever the pid file says.
    conf, pid_file = tmp_path / "keepalived.conf", tmp_path / "keepalived.pid"
    check = KeepalivedCheck(pid_file, conf)
    assert check.problem() is None
    conf.write_text("vrrp_instance ...\n")
    assert "is missing" in (check.problem() or "")


def test_process_running() -> None:
    assert process_running(os.getpid())
    assert not process_running(0) and not process_running(-1)
    assert not process_running(2**22 + 1)  # above pid_max: no such process

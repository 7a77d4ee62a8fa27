"""When the real agent sends: at once on a change, quiet in between, not at all without keepalived,
and on through HAProxy going away, being reloaded and coming back. Real HAProxy, real processes.

Each test runs a few seconds: it must watch the agent stay quiet for longer
than a heartbeat interval, or wait for HAProxy's checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agent_testlib import agent_cmd, drain, provision, receive, silent, stop, udp_socket, wait_for
from conftest import LoadBalancer

from healthmgr.wire.values import Heartbeat, MemberState

UP, DOWN = MemberState.UP, MemberState.DOWN


def members(hb: Heartbeat) -> list[MemberState]:
    return [m.status for pool in hb.pools for m in pool.members]


@contextmanager
def running_agent(
    tmp_path: Path, socket_path: Path, port: int, *options: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The agent as a process, sending to 127.0.0.1:port; yields it and its log file."""
    amphora_id = str(uuid.uuid4())
    key_file = provision(tmp_path, amphora_id)
    log = tmp_path / "agent.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            agent_cmd(
                "--amphora-id", amphora_id, "--key-id", "7", "--key-file", str(key_file),
                "--controller", f"127.0.0.1:{port}", "--haproxy-socket", str(socket_path),
                "--state-dir", str(tmp_path / "state"), *options,
            ),
            stderr=err,
        )  # fmt: skip
    try:
        yield proc, log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop(proc)


def settled(rx: object, want: list[MemberState]) -> Heartbeat:
    """Heartbeats until one reports the members as ``want`` (HAProxy's first checks)."""
    for _ in range(50):
        hb = receive(rx)  # type: ignore[arg-type]
        if members(hb) == want:
            return hb
    raise AssertionError(f"members never {want}")


@pytest.mark.haproxy
def test_a_change_goes_out_at_once_and_steady_state_stays_quiet(
    haproxy_lb: LoadBalancer, tmp_path: Path
) -> None:
    lb = haproxy_lb
    with (
        udp_socket() as rx,
        running_agent(
            tmp_path,
            lb.socket_path,
            rx.getsockname()[1],
            "--interval",
            "30",
            "--poll-interval",
            "0.1",
        ),
    ):
        before = settled(rx, [UP, UP])
        # Nothing changes: no heartbeat before the interval (30 s) is up.
        assert silent(rx, 1.5)

        stop(lb.webs[1])
        down = receive(rx, 10)
        assert members(down) == [UP, DOWN]
        assert down.seq == before.seq + 1  # an ordinary heartbeat, the next number
        assert down.interval_ms == 30_000
        assert down.sent_at_ms - before.sent_at_ms < down.interval_ms  # not the periodic one
        # Once is enough: the member stays DOWN, nothing more to say.
        assert silent(rx, 1.0)


@pytest.mark.haproxy
def test_vrrp_no_heartbeats_while_keepalived_is_not_running(
    haproxy_lb: LoadBalancer, tmp_path: Path
) -> None:
    # A stand-in for keepalived: any process whose pid is in the pid file.
    pid_file = tmp_path / "keepalived.pid"
    keepalived = subprocess.Popen(["sleep", "300"])
    pid_file.write_text(f"{keepalived.pid}\n")
    try:
        with udp_socket() as rx, running_agent(
            tmp_path, haproxy_lb.socket_path, rx.getsockname()[1],
            "--interval", "1", "--poll-interval", "0.1", "--keepalived-pid-file", str(pid_file),
            "-v",
        ) as (_, log):  # fmt: skip
            first = receive(rx)
            keepalived.kill()
            keepalived.wait()  # reaped: a zombie would count as not running too
            time.sleep(0.3)  # a heartbeat already on its way may still land
            last = max([first, *drain(rx)], key=lambda hb: hb.seq)
            # Longer than the interval: a running agent would have sent at least once.
            assert silent(rx, 2.5)

            keepalived = subprocess.Popen(["sleep", "300"])
            new_pid = tmp_path / "keepalived.pid.new"
            new_pid.write_text(f"{keepalived.pid}\n")
            new_pid.rename(pid_file)
            back = receive(rx, 5)
            assert back.seq > last.seq and back.listeners
        text = log.read_text()
    finally:
        stop(keepalived)
    assert text.count("is not running: sending no heartbeats") == 1, text
    assert "keepalived is running: heartbeats resume" in text
    # At once, as a first heartbeat, not at the end of an interval.
    resumed = text.split("heartbeats resume", 1)[1]
    assert f"heartbeat seq={back.seq} (first)" in resumed, text


@pytest.mark.haproxy
def test_haproxy_down_reloaded_and_back_without_an_agent_restart(
    haproxy_bin: str, haproxy_lb: LoadBalancer, tmp_path: Path
) -> None:
    lb = haproxy_lb
    cfg = lb.socket_path.parent / "haproxy.cfg"

    def start_haproxy(*extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([haproxy_bin, "-db", "-f", str(cfg), *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        return proc

    with (
        udp_socket() as rx,
        running_agent(
            tmp_path,
            lb.socket_path,
            rx.getsockname()[1],
            "--interval",
            "1",
            "--poll-interval",
            "0.2",
        ) as (agent, log),
    ):
        hb = settled(rx, [UP, UP])
        assert hb.counters_epoch & 0x3FFFFF == lb.haproxy.pid

        # A reload: a new process takes over and replaces the socket file.
        old, inode = lb.haproxy, os.stat(lb.socket_path).st_ino
        lb.haproxy = start_haproxy("-sf", str(old.pid))
        old.wait(10)
        wait_for(lambda: os.stat(lb.socket_path).st_ino != inode, what="a new socket file")
        for _ in range(20):
            hb = receive(rx)
            assert hb.listeners, "a reload must not look like HAProxy going away"
            if hb.counters_epoch & 0x3FFFFF == lb.haproxy.pid:
                break
        assert hb.counters_epoch & 0x3FFFFF == lb.haproxy.pid

        # HAProxy stops: the agent keeps sending, with no listeners.
        stop(lb.haproxy)
        hb = receive(rx)
        while hb.listeners:
            hb = receive(rx)
        again = receive(rx)
        assert not hb.pools and not again.listeners and not again.pools

        # A new HAProxy on the same socket path: read again, no restart.
        lb.haproxy = start_haproxy()
        hb = receive(rx)
        while not hb.listeners:
            hb = receive(rx)
        assert hb.counters_epoch & 0x3FFFFF == lb.haproxy.pid
        assert agent.poll() is None
    text = log.read_text()
    # Logged when it started failing and when it ended, not at every poll.
    assert text.count("HAProxy stats unavailable, reporting no listeners") == 1, text
    assert text.count("HAProxy stats readable again") == 1, text

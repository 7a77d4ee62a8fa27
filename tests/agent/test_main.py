"""The agent as a real process: against a real HAProxy, sending to a UDP socket the test binds."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from agent import haproxy
from agent.config import AgentConfig, Destination
from agent.main import Agent
from agent.main import main as agent_main
from agent.sender import SequenceFile, UdpSender
from healthmgr.wire.ids import id_bytes
from healthmgr.wire.native import decode_native
from healthmgr.wire.values import ListenerState, MemberState, PoolState
from tests.agent.agent_testlib import (
    MASTER,
    LoadBalancer,
    agent_cmd,
    provision,
    receive,
    silent,
    stop,
    udp_socket,
    wait_for,
)

BASE = ("--amphora-id", str(uuid.uuid4()), "--controller", "127.0.0.1:5555")


@pytest.mark.haproxy
def test_agent_end_to_end(haproxy_lb: LoadBalancer, tmp_path: Path) -> None:
    lb = haproxy_lb
    amphora_id = str(uuid.uuid4())
    key_file = provision(tmp_path, amphora_id)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[amphora_agent]\namphora_id = "{amphora_id}"\nhaproxy_socket = "{lb.socket_path}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f"[health_manager]\nheartbeat_interval = 0.2\nheartbeat_key_id = 7\n"
        f'heartbeat_key_file = "{key_file}"\n'
    )
    with udp_socket() as rx:
        port = rx.getsockname()[1]
        proc = subprocess.Popen(
            agent_cmd("--config", str(config), "--controller", f"127.0.0.1:{port}"),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Wait until both members are settled UP (checks start as soon as HAProxy does).
            for _ in range(50):
                hb = receive(rx)
                if [m.status for m in hb.pools[0].members] == [MemberState.UP] * 2:
                    break
            assert [m.status for m in hb.pools[0].members] == [MemberState.UP] * 2
            assert hb.amphora_id == id_bytes(amphora_id)
            (listener,) = hb.listeners
            assert listener.id == id_bytes(lb.listener_id)
            assert listener.status is ListenerState.OPEN
            (pool,) = hb.pools
            assert (pool.id, pool.listener_id, pool.status) == (
                id_bytes(lb.pool_id),
                id_bytes(lb.listener_id),
                PoolState.UP,
            )
            assert [m.id for m in pool.members] == [id_bytes(m) for m in lb.member_ids]
            assert hb.interval_ms == 200
            assert hb.counters_epoch & 0x3FFFFF == lb.haproxy.pid
            first_seq = hb.seq

            # Kill web-2: the member goes DOWN in a later heartbeat; seq keeps rising.
            stop(lb.webs[1])
            for _ in range(50):
                later = receive(rx)
                if later.pools[0].members[1].status is MemberState.DOWN:
                    break
            assert later.pools[0].members[1].status is MemberState.DOWN
            assert later.pools[0].members[0].status is MemberState.UP
            assert later.seq > first_seq

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            stop(proc)
        assert "stopping" in proc.stderr.read()

    # A restart resumes above every number sent before (the reservation file).
    with udp_socket() as rx:
        port = rx.getsockname()[1]
        again = subprocess.run(
            agent_cmd("--config", str(config), "--controller", f"127.0.0.1:{port}", "--once"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        assert receive(rx, 1).seq > later.seq


@pytest.mark.haproxy
def test_sigint_and_unreachable_haproxy(tmp_path: Path) -> None:
    amphora_id = str(uuid.uuid4())
    key_file = provision(tmp_path, amphora_id)
    with udp_socket() as rx:
        port = rx.getsockname()[1]
        proc = subprocess.Popen(
            agent_cmd(
                "--amphora-id",
                amphora_id,
                "--key-file",
                str(key_file),
                "--controller",
                f"127.0.0.1:{port}",
                "--haproxy-socket",
                str(tmp_path / "no-haproxy.sock"),
                "--state-dir",
                str(tmp_path / "state"),
                "--interval",
                "0.1",
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # No HAProxy: the heartbeat still goes out, reporting no listeners.
            hb = receive(rx)
            assert hb.listeners == () and hb.pools == ()
            wait_for(lambda: (tmp_path / "state" / "heartbeat-seq").exists(), what="seq file")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            stop(proc)
        err = proc.stderr.read()
    assert "HAProxy stats unavailable" in err and "no-haproxy.sock" in err
    assert err.count("HAProxy stats unavailable") == 1  # not repeated every interval


def _run_agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_cmd(*args), capture_output=True, text=True, timeout=30, check=False, cwd=cwd
    )


@pytest.mark.parametrize(
    ("toml", "flags", "message"),
    [
        ("", [], "amphora_id is not set"),
        ('[amphora_agent]\namphora_id = "nope"\n', [], "amphora_agent.amphora_id: not a UUID"),
        ("[amphora_agent]\nbogus = 1\n", [], "amphora_agent.bogus"),
        ("[health_manager\n", [], "not valid TOML"),
        (
            "[health_manager]\nheartbeat_interval = -1\n",
            ["--amphora-id", str(uuid.uuid4())],
            "heartbeat_interval",
        ),
        ("", ["--amphora-id", str(uuid.uuid4())], "controller_ip_port_list is empty"),
        (
            "",
            ["--amphora-id", str(uuid.uuid4()), "--controller", "10.0.0.1:99999"],
            "port must be 1-65535",
        ),
        (
            "",
            ["--amphora-id", str(uuid.uuid4()), "--controller", "127.0.0.1:5555"],
            "heartbeat_key_file is not set",
        ),
        (
            "",
            [*BASE, "--key-file", "missing.key"],
            "key file missing.key",
        ),
        (
            "",
            [*BASE, "--key-file", "short.key", "--key-id", "1"],
            "key must be 32 bytes",
        ),
        (
            "",
            [*BASE, "--key-file", "good.key"],
            "heartbeat_key_id is not set",
        ),
        (
            "",
            [*BASE, "--key-file", "good.key", "--key-id", "1", "--haproxy-socket", "nowhere"],
            "expected a path or ip:port",
        ),
    ],
)
def test_bad_config_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    flags: list[str],
    message: str,
) -> None:
    # In-process (a subprocess per case costs a second of imports); the
    # subprocess tests below check the same path for real.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent.toml").write_text(toml)
    (tmp_path / "short.key").write_text("abcd\n")
    (tmp_path / "good.key").write_text("11" * 32 + "\n")
    assert agent_main(["--config", "agent.toml", *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amphora-agent: error: "), lines
    assert message in lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    result = _run_agent("--config", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "amphora-agent: error: config file nope.toml does not exist"


def test_unusable_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: a configuration error like those above (the process: the previous test).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.key").write_text("11" * 32)
    flags = [*BASE, "--key-file", "good.key", "--key-id", "1", "--state-dir", "good.key/state"]
    assert agent_main(flags) == 2
    err = capsys.readouterr().err
    assert err.strip() == "amphora-agent: error: state_dir good.key/state: Not a directory"


def test_once_sends_nothing_while_keepalived_is_down(tmp_path: Path) -> None:
    (tmp_path / "good.key").write_text("11" * 32)
    with udp_socket() as rx:
        result = _run_agent(
            "--amphora-id", str(uuid.uuid4()), "--controller", f"127.0.0.1:{rx.getsockname()[1]}",
            "--key-file", "good.key", "--key-id", "1", "--state-dir", "state",
            "--keepalived-pid-file", "keepalived.pid", "--once",
            cwd=tmp_path,
        )  # fmt: skip
        assert silent(rx, 0.2)
    assert result.returncode == 1
    assert "keepalived pid file keepalived.pid is missing: sending no heartbeats" in result.stderr


def _agent(tmp_path: Path, rx: socket.socket) -> Agent:
    config = AgentConfig(
        amphora_id=uuid.uuid4().bytes,
        key_id=MASTER.id,
        key=bytes(32),
        destinations=(Destination("127.0.0.1", rx.getsockname()[1]),),
        haproxy_socket=str(tmp_path / "unused.sock"),
        interval=1.0,
        state_dir=tmp_path,
    )
    return Agent(config, SequenceFile(tmp_path, now_ms=1), UdpSender(config.destinations))


def _snapshot(members: int) -> haproxy.Snapshot:
    lid, pid = str(uuid.uuid4()), str(uuid.uuid4())
    text = "Pid: 5\nStart_time_sec: 100\n\n# pxname,svname,status,weight,type\n"
    text += f"{lid},FRONTEND,OPEN,,0\n{pid}:{lid},BACKEND,UP,1,1\n"
    text += "".join(f"{pid}:{lid},{uuid.uuid4()},UP,1,2\n" for _ in range(members))
    return haproxy.parse_snapshot(text)


@pytest.mark.parametrize("members", [2, 1024])
async def test_beat_sends_one_datagram(tmp_path: Path, members: int) -> None:
    with udp_socket() as rx:
        agent = _agent(tmp_path, rx)
        agent.poll = lambda: _async(_snapshot(members))  # type: ignore[method-assign]
        await agent.beat()
        agent.sender.close()
        rx.settimeout(1)
        datagram = rx.recv(65536)
    hb = decode_native(datagram, StaticKeys())
    assert len(hb.pools[0].members) == members
    assert hb.counters_epoch == (100 << 22) | 5


async def test_oversized_heartbeat_is_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # schema/heartbeat.md 9.1: beyond the limits nothing is sent (no split, no
    # trimming), an error is logged every interval.
    with udp_socket() as rx:
        agent = _agent(tmp_path, rx)
        agent.poll = lambda: _async(_snapshot(4000))  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="amphora-agent"):
            await agent.beat()
            await agent.beat()
        agent.sender.close()
        rx.settimeout(0.2)
        with pytest.raises(TimeoutError):
            rx.recv(65536)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("not sent" in e for e in errors)


async def _async(value: object) -> object:
    return value


class StaticKeys:
    def key_for(self, key_id: int, amphora_id: bytes) -> bytes:
        return bytes(32)

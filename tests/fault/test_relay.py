"""The fault relay (healthmgr.chaos.relay) on real sockets, against a real echo server."""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from healthmgr.chaos.relay import Relay, RelayError, RelayProcess, Setting

Address = tuple[str, int]
QUIET_S = 0.5  # how long "nothing arrives" is watched for


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[Address]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()


@pytest.fixture
def relay(echo: Address) -> Iterator[Relay]:
    with Relay(echo) as r:
        yield r


def _connect(relay: Relay | RelayProcess) -> socket.socket:
    sock = socket.create_connection(relay.address, timeout=5)
    sock.settimeout(5)
    return sock


def _roundtrip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _silent(sock: socket.socket, data: bytes = b"hello?") -> bool:
    """True if nothing comes back within QUIET_S (the connection stays open)."""
    sock.sendall(data)
    sock.settimeout(QUIET_S)
    try:
        return sock.recv(1) == b"x"  # never: either timeout or something arrives
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)


def _is_reset(sock: socket.socket) -> bool:
    try:
        sock.sendall(b"after")
        return sock.recv(1) == b""  # closed, or ...
    except (ConnectionResetError, BrokenPipeError):
        return True  # ... reset


def test_pass_forwards_both_ways_and_counts(relay: Relay) -> None:
    with _connect(relay) as sock:
        assert _roundtrip(sock, b"x" * 200_000) == b"x" * 200_000
    status = relay.status()
    assert status["mode"] == "pass" and status["accepted"] == 1
    assert status["bytes_forwarded"] == 400_000


def test_blackhole_swallows_old_and_new_connections_then_resets_them(relay: Relay) -> None:
    old = _connect(relay)
    idle = _connect(relay)
    assert _roundtrip(old) == b"ping" and _roundtrip(idle) == b"ping"
    assert relay.blackhole()["mode"] == "blackhole"
    assert _silent(old)
    new = _connect(relay)  # accepted, and swallowed as well
    assert _silent(new)
    assert relay.status()["bytes_dropped"] >= 2 * len(b"hello?")
    relay.passthrough()
    # Streams that lost bytes are corrupt: reset. One that lost nothing resumes.
    assert _is_reset(old) and _is_reset(new)
    assert _roundtrip(idle) == b"ping"
    with _connect(relay) as fresh:
        assert _roundtrip(fresh) == b"ping"
    for sock in (old, new, idle):
        sock.close()


def test_refuse_resets_connections_and_refuses_new_ones_on_the_same_port(relay: Relay) -> None:
    port = relay.port
    sock = _connect(relay)
    assert _roundtrip(sock) == b"ping"
    relay.refuse()
    assert _is_reset(sock)
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(relay.address, timeout=5)
    relay.passthrough()
    assert relay.port == port
    with _connect(relay) as again:
        assert _roundtrip(again) == b"ping"


def test_delay_holds_each_chunk_in_order(relay: Relay) -> None:
    relay.delay(0.3)
    with _connect(relay) as sock:
        start = time.monotonic()
        for i in range(3):
            sock.sendall(b"%d" % i)
        got = b""
        while len(got) < 3:
            got += sock.recv(10)
        elapsed = time.monotonic() - start
    assert got == b"012"
    assert elapsed >= 0.6  # 0.3 s each way: the behaviour, not a speed bound
    relay.passthrough()


def test_unreachable_target_resets_the_client() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    target = free.getsockname()
    free.close()  # nothing listens there
    with Relay(target) as relay:
        try:
            sock = _connect(relay)
        except ConnectionResetError:
            return  # the reset came before connect() returned (a loaded machine): the same
        with sock:
            assert _is_reset(sock)


@pytest.mark.parametrize("bad", ["", "fly", "delay", "delay x", "delay -1", "pass 3"])
def test_bad_commands_are_refused(relay: Relay, bad: str) -> None:
    with pytest.raises(RelayError, match="bad"):
        relay.command(bad)
    assert relay.status()["mode"] == "pass"


def test_setting_parse() -> None:
    assert Setting.parse(" DELAY 0.25 ").delay == 0.25
    assert str(Setting.parse("refuse").mode) == "refuse"


def test_relay_process_is_controlled_over_its_socket(echo: Address) -> None:
    with RelayProcess(echo) as relay:
        with _connect(relay) as sock:
            assert _roundtrip(sock) == b"ping"
            assert relay.blackhole()["mode"] == "blackhole"
            assert _silent(sock)
        # The command-line client speaks the same protocol.
        assert relay.control is not None
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "healthmgr.chaos.relay",
                "--control",
                relay.control.path,
                "--send",
                "pass",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(out.stdout)["mode"] == "pass"
        with _connect(relay) as sock:
            assert _roundtrip(sock) == b"ping"
        with pytest.raises(RelayError, match="bad"):
            relay.command("sideways")
        process = relay.process
        assert process is not None
        process.terminate()
        assert process.wait(10) == 0  # SIGTERM: a clean exit


def test_relay_process_needs_a_target() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "healthmgr.chaos.relay", "--target", "nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "host:port" in out.stderr

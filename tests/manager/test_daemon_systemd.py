"""sd_notify: READY, WATCHDOG and STOPPING reach systemd's notification socket.

systemd itself does not run here; the test binds the datagram socket that
systemd would pass in NOTIFY_SOCKET and reads what the real daemon sends.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.manager.conftest import SQLITE_ONLY, SeededDb
from tests.manager.harness import start_daemon, write_config


def _messages(sock: socket.socket, until: str, timeout: float = 15.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            seen.extend(sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            break
        if until in seen:
            return seen
    raise AssertionError(f"{until!r} not received; got {seen}")


@SQLITE_ONLY
def test_ready_watchdog_and_stopping_are_notified(
    seeded: SeededDb, config_dir: Path, tmp_path: Path
) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        daemon = start_daemon(
            write_config(config_dir / "hm.toml", seeded.url),
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
        )
        try:
            got = _messages(sock, "READY=1")
            got += _messages(sock, "WATCHDOG=1")
            got += _messages(sock, "WATCHDOG=1")  # repeated, every half period
        finally:
            daemon.kill(signal.SIGTERM)
        assert "STOPPING=1" in _messages(sock, "STOPPING=1")
        daemon.kill(signal.SIGTERM)  # a second SIGTERM while shutting down is absorbed
        assert daemon.stop() == 0

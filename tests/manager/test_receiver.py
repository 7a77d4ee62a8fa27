"""The UDP edge: receive buffer, kernel drops and queue size, on real sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from healthmgr.manager.receiver import Receiver, bind_udp, u32_delta

ROOT = Path(__file__).resolve().parents[2]
DATAGRAM = b"AHB\x01" + bytes(225)


def sender() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def receiver(rcvbuf: int | None = None) -> Receiver:
    sock = bind_udp("127.0.0.1", 0, rcvbuf=rcvbuf)
    return Receiver(sock, lambda data, addr, mono, wall: None, lambda n, started: None)


def test_overflowing_the_socket_is_counted_as_kernel_drops() -> None:
    rx = receiver(rcvbuf=64 * 1024)
    tx = sender()
    try:
        assert rx.kernel_drops() == 0
        sent = 500  # about 640 KB of buffer (1.3 KB per small datagram): most are dropped
        for _ in range(sent):
            tx.sendto(DATAGRAM, rx.sock.getsockname())
        drops = rx.kernel_drops()
        assert 0 < drops < sent
        used, size = rx.queue_bytes()
        assert 0 < used <= size + 4096  # the kernel lets one datagram past the limit
        while not rx.drain():
            pass
        assert rx.received + drops == sent
        assert rx.queue_bytes()[0] == 0
        assert rx.kernel_drops() == drops  # cumulative: reading does not reset it
        for _ in range(sent):
            tx.sendto(DATAGRAM, rx.sock.getsockname())
        assert rx.kernel_drops() > drops
    finally:
        tx.close()
        rx.sock.close()


def test_nothing_dropped_while_the_socket_keeps_up() -> None:
    rx = receiver(rcvbuf=4 << 20)
    tx = sender()
    try:
        for _ in range(200):
            tx.sendto(DATAGRAM, rx.sock.getsockname())
        assert rx.queue_bytes()[0] > 0
        while not rx.drain():
            pass
        assert rx.received == 200 and rx.kernel_drops() == 0
    finally:
        tx.close()
        rx.sock.close()


def test_queue_size_reports_the_buffer_the_kernel_granted() -> None:
    rx = receiver(rcvbuf=1 << 20)
    try:
        used, size = rx.queue_bytes()
        assert used == 0
        assert size == rx.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 << 20
    finally:
        rx.sock.close()


def test_drop_counter_is_followed_across_its_32_bit_wrap() -> None:
    assert u32_delta(10, 25) == 15
    assert u32_delta(2**32 - 5, 3) == 8
    assert u32_delta(7, 7) == 0


_PROBE = """
import json, socket, sys
sys.path.insert(0, sys.argv[1])
from healthmgr.manager.receiver import bind_udp
size = int(sys.argv[2])
sock = bind_udp("127.0.0.1", 0, rcvbuf=size)
rmem_max = int(open("/proc/sys/net/core/rmem_max").read())
print(json.dumps({"granted": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2,
                  "rmem_max": rmem_max}))
"""


def _probe(size: int, *prefix: str) -> dict[str, int]:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", _PROBE, str(ROOT), str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def _can_drop_net_admin() -> bool:
    try:
        return (
            subprocess.run(
                ["setpriv", "--bounding-set=-net_admin", "true"], capture_output=True
            ).returncode
            == 0
        )
    except FileNotFoundError:
        return False


def test_buffer_beyond_rmem_max_with_cap_net_admin() -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    want = rmem_max * 4
    got = _probe(want)
    if got["granted"] < want:
        pytest.skip("this process has no CAP_NET_ADMIN: SO_RCVBUFFORCE is refused")
    assert got["granted"] == want


@pytest.mark.skipif(not _can_drop_net_admin(), reason="needs setpriv to drop CAP_NET_ADMIN")
def test_buffer_falls_back_to_rmem_max_without_cap_net_admin() -> None:
    got = _probe(64 << 20, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
    assert got["granted"] == min(64 << 20, got["rmem_max"])


def test_kernel_drops_metric_reads_the_socket_at_each_scrape() -> None:
    from healthmgr.manager.metrics import Metrics

    metrics = Metrics(process=False)
    assert metrics.value("healthmgr_kernel_drops_total") == 0
    rx = receiver(rcvbuf=64 * 1024)
    tx = sender()
    try:
        metrics.watch_kernel_drops(rx.kernel_drops)
        for _ in range(500):
            tx.sendto(DATAGRAM, rx.sock.getsockname())
        dropped = rx.kernel_drops()
        assert dropped > 0
        assert metrics.value("healthmgr_kernel_drops_total") == dropped
    finally:
        tx.close()
        rx.sock.close()
    # Closed at shutdown: the last value stands, the endpoint still answers.
    assert metrics.value("healthmgr_kernel_drops_total") == dropped

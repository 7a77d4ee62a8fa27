"""The UDP edge: bind, then drain the socket in batches.

One ``wait_readable`` per burst, then non-blocking ``recvfrom`` until the
socket would block: an ``await`` per datagram would halve the throughput.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

import trio

MAX_DATAGRAM = 65535
BURST = 2048  # datagrams between checkpoints, so the writer gets its turn

Handler = Callable[[bytes, object, float, int], None]
AfterBurst = Callable[[int, float], None]  # (datagrams, monotonic start of the burst)


def bind_udp(ip: str, port: int, *, rcvbuf: int | None = None, reuse_port: bool = False):
    """A non-blocking UDP socket; ``::`` listens on IPv4 and IPv6."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((ip, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Receiver:
    def __init__(self, sock: socket.socket, handle: Handler, after_burst: AfterBurst):
        self.sock = sock
        self.handle = handle
        self.after_burst = after_burst
        self.received = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            before, started = self.received, time.monotonic()
            drained = self.drain()
            # The first datagram of a burst waited longest: its lag bounds the burst's.
            self.after_burst(self.received - before, started)
            if not drained:
                await trio.lowlevel.checkpoint()

    def drain(self) -> bool:
        """Handle up to BURST datagrams; True when the socket ran dry."""
        recvfrom = self.sock.recvfrom
        handle = self.handle
        monotonic = time.monotonic
        wall_ns = time.time_ns
        n = 0
        try:
            while n < BURST:
                data, addr = recvfrom(MAX_DATAGRAM)
                n += 1
                handle(data, addr, monotonic(), wall_ns() // 1_000_000)
        except BlockingIOError:
            return True
        finally:
            self.received += n
        return False


SO_MEMINFO = 55  # Linux: struct sk_meminfo as an array of u32
SK_MEMINFO_DROPS = 8


def socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped at this socket (receive buffer full), cumulative.

    0 where the kernel does not offer SO_MEMINFO.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
    except OSError:
        return 0
    return int.from_bytes(raw[4 * SK_MEMINFO_DROPS : 4 * SK_MEMINFO_DROPS + 4], "little")

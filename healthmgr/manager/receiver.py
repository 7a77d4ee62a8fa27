"""The UDP edge: bind, then drain the socket in batches.

One ``wait_readable`` per burst, then non-blocking ``recvfrom`` until the
socket would block: an ``await`` per datagram would halve the throughput.
``recvfrom`` into a fresh buffer, not ``recvfrom_into`` a preallocated one:
the decoders need ``bytes``, and the copy costs more than the allocation
(1.14 against 1.32 us per 229-byte datagram, docs/performance.md).

The socket also tells how well it keeps up: ``kernel_drops`` (datagrams the
kernel dropped at this socket because its buffer was full) and
``queue_bytes``, read with ``SO_MEMINFO``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from collections.abc import Callable

import trio

MAX_DATAGRAM = 65535
BURST = 2048  # datagrams between checkpoints, so the writer gets its turn

# Linux socket options the socket module does not name (asm-generic/socket.h).
SO_RCVBUFFORCE = 33  # SO_RCVBUF beyond net.core.rmem_max, with CAP_NET_ADMIN
SO_MEMINFO = 55  # u32[SK_MEMINFO_VARS]
SK_MEMINFO_RMEM_ALLOC = 0  # bytes queued (skb truesize: ~1.3 KB per small datagram)
SK_MEMINFO_RCVBUF = 1
SK_MEMINFO_DROPS = 8  # sk_drops: buffer full (and socket filter, none attached here)
_MEMINFO = struct.Struct("9I")
_U32 = 1 << 32

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
            set_rcvbuf(sock, rcvbuf)
        sock.bind((ip, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_rcvbuf(sock: socket.socket, size: int) -> None:
    """Ask for ``size`` bytes of receive buffer: beyond ``net.core.rmem_max`` when the
    process may (CAP_NET_ADMIN), else up to it (the caller compares and warns)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOPROTOOPT):
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def u32_delta(previous: int, current: int) -> int:
    """How far a 32-bit counter moved from ``previous`` to ``current`` (one wrap at most)."""
    return (current - previous) % _U32


def meminfo(sock: socket.socket) -> tuple[int, ...]:
    """The socket's SO_MEMINFO counters (Linux)."""
    return _MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size))


class Receiver:
    def __init__(self, sock: socket.socket, handle: Handler, after_burst: AfterBurst):
        self.sock = sock
        self.handle = handle
        self.after_burst = after_burst
        self.received = 0
        self._drops_raw = self._drops = 0

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped at this socket since it was made (buffer
        full). The kernel's counter is 32 bits: it is followed across a
        wrap as long as this is read at least once per 2**32 drops."""
        raw = meminfo(self.sock)[SK_MEMINFO_DROPS]
        self._drops += u32_delta(self._drops_raw, raw)
        self._drops_raw = raw
        return self._drops

    def queue_bytes(self) -> tuple[int, int]:
        """(bytes queued in the receive buffer, its size), both as the kernel counts:
        per datagram its buffer's true size, and twice what SO_RCVBUF asked for."""
        info = meminfo(self.sock)
        return info[SK_MEMINFO_RMEM_ALLOC], info[SK_MEMINFO_RCVBUF]

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

"""A UDP relay that loses, duplicates, reorders, delays and corrupts datagrams: netem in user space.

This machine's kernel has no netem, so heartbeat faults are made between the
senders (real ``amphora-agent`` processes, or the fleet simulator) and a
manager::

    agent --> relay HOST:PORT --> manager 127.0.0.1:5555

Heartbeats are one-way (a manager never answers), so the relay forwards one
way only, every datagram from the relay's own socket. Each datagram is judged
on its own by :func:`plan` (pure, with a seeded generator):

``loss p``       it is not forwarded;
``duplicate p``  it is forwarded twice;
``reorder p``    it is held ``reorder_delay`` seconds more, so that later
                 datagrams (the same agent's next heartbeat, when
                 ``reorder_delay`` exceeds its interval) overtake it;
``corrupt p``    one byte is flipped: the manager must reject it (a bad
                 signature, magic or encoding), never accept it;
``delay s``, ``jitter s``  every datagram waits ``delay`` plus a uniform
                 ``0..jitter`` seconds (so jitter alone reorders too).

In a program, :class:`UdpRelay` runs in a thread of its own (a trio loop)::

    with UdpRelay(("127.0.0.1", 5555), UdpFaults(loss=0.1)) as relay:
        agent_sends_to(relay.address)
        relay.set(UdpFaults())          # in force when it returns
        relay.counts                    # received, forwarded, lost, ...

From a shell (stops on SIGTERM or SIGINT, then prints its counts as JSON)::

    python -m healthmgr.chaos.udp_relay --listen 127.0.0.1:6555 --target 127.0.0.1:5555 \\
        --loss 0.1 --duplicate 0.05 --reorder 0.05 --reorder-delay 15 --delay 0.02 \\
        --jitter 0.01 --corrupt 0.01 [--seed 0]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import trio

from healthmgr.chaos.threaded import ServerThread
from healthmgr.wire.addresses import split_host_port

Address = tuple[str, int]
MAX_DATAGRAM = 65535


class UdpRelayError(Exception):
    """The relay could not start or was given a bad setting."""


@dataclass(frozen=True, slots=True)
class UdpFaults:
    """What happens to each datagram (probabilities, seconds)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder_delay: float = 1.0

    @classmethod
    def lossy(cls, interval: float, corrupt: float) -> UdpFaults:
        """A bad network: a tenth lost, duplicated and reordered, some corrupted.

        Delay and jitter are small beside the heartbeat ``interval``, as on a real
        network; reordered datagrams arrive up to one and a half intervals late.
        """
        d = interval / 50
        return cls(0.1, 0.1, 0.1, corrupt, d, d, reorder_delay=1.5 * interval)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UdpRelayError(f"{name} must be a probability in [0, 1], got {value}")
        for name in ("delay", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 3600:
                raise UdpRelayError(f"{name} must be seconds from 0 to 3600, got {value}")


@dataclass
class UdpCounts:
    received: int = 0
    forwarded: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    send_errors: int = 0


def plan(
    data: bytes, faults: UdpFaults, rng: random.Random, counts: UdpCounts
) -> list[tuple[float, bytes]]:
    """The copies of ``data`` to forward, each with its delay in seconds; counts what it did."""
    counts.received += 1
    if faults.loss and rng.random() < faults.loss:
        counts.lost += 1
        return []
    copies = 1
    if faults.duplicate and rng.random() < faults.duplicate:
        copies = 2
        counts.duplicated += 1
    out = []
    for _ in range(copies):
        delay = faults.delay + (rng.uniform(0, faults.jitter) if faults.jitter else 0.0)
        if faults.reorder and rng.random() < faults.reorder:
            delay += faults.reorder_delay
            counts.reordered += 1
        payload = data
        if faults.corrupt and data and rng.random() < faults.corrupt:
            at = rng.randrange(len(data))
            payload = data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :]
            counts.corrupted += 1
        out.append((delay, payload))
    return out


class UdpRelayServer:
    """The relay in trio: :meth:`serve` under a nursery; :attr:`faults` switched at any time."""

    def __init__(
        self,
        target: Address,
        listen: Address = ("127.0.0.1", 0),
        faults: UdpFaults | None = None,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.address = listen
        self.faults = faults or UdpFaults()
        self.counts = UdpCounts()
        self._rng = random.Random(f"udp-relay-{seed}")
        self._queue: list[tuple[float, int, bytes]] = []  # (due, order, datagram)
        self._order = 0
        self._wake = trio.Event()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        out_family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        with (
            trio.socket.socket(family, socket.SOCK_DGRAM) as rx,
            trio.socket.socket(out_family, socket.SOCK_DGRAM) as tx,
        ):
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            await rx.bind(self.address)
            self.address = rx.getsockname()[:2]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward, tx)
                task_status.started(self.address)
                await self._receive(rx)

    async def _receive(self, rx: trio.socket.SocketType) -> None:
        while True:
            data, _ = await rx.recvfrom(MAX_DATAGRAM)
            now = trio.current_time()
            for delay, payload in plan(data, self.faults, self._rng, self.counts):
                self._order += 1
                heapq.heappush(self._queue, (now + delay, self._order, payload))
            self._wake.set()

    async def _forward(self, tx: trio.socket.SocketType) -> None:
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            due = self._queue[0][0]
            if due > trio.current_time():
                self._wake = trio.Event()
                with trio.move_on_at(due):
                    await self._wake.wait()  # an earlier datagram may have arrived
                continue
            _, _, payload = heapq.heappop(self._queue)
            try:
                await tx.sendto(payload, self.target)
                self.counts.forwarded += 1
            except OSError:
                self.counts.send_errors += 1


class UdpRelay(ServerThread):
    """:class:`UdpRelayServer` in a daemon thread of this process; a context manager."""

    def __init__(
        self,
        target: Address,
        faults: UdpFaults | None = None,
        *,
        listen: Address = ("127.0.0.1", 0),
        seed: int = 0,
    ) -> None:
        self._server = UdpRelayServer(target, listen, faults, seed)
        super().__init__(
            self._server.serve, name=f"udp-relay->{target}", what="UDP relay", error=UdpRelayError
        )

    @property
    def address(self) -> Address:
        return self._server.address

    @property
    def target(self) -> Address:
        return self._server.target

    @property
    def counts(self) -> UdpCounts:
        return self._server.counts

    @property
    def faults(self) -> UdpFaults:
        return self._server.faults

    @property
    def pending(self) -> int:
        """Datagrams received and not forwarded yet (delayed, reordered)."""
        return len(self._server._queue)

    def set(self, faults: UdpFaults) -> None:
        """New faults for every datagram received from now on (those queued keep theirs)."""
        self._server.faults = faults  # one reference assignment: atomic for the relay's thread

    def update(self, **changes: float) -> None:
        self.set(replace(self._server.faults, **changes))


# -- command line ----------------------------------------------------------------------


def _address(text: str, *, zero: bool = False) -> Address:
    try:
        return split_host_port(text, allow_zero_port=zero)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m healthmgr.chaos.udp_relay", description=__doc__.splitlines()[0]
    )
    p.add_argument("--listen", type=lambda t: _address(t, zero=True), default=("127.0.0.1", 0))
    p.add_argument("--target", type=_address, required=True)
    for name in ("loss", "duplicate", "reorder", "corrupt"):
        p.add_argument(f"--{name}", type=float, default=0.0, help="probability per datagram")
    p.add_argument("--delay", type=float, default=0.0, help="seconds")
    p.add_argument("--jitter", type=float, default=0.0, help="seconds, uniform")
    p.add_argument("--reorder-delay", type=float, default=1.0, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Blocked before the relay's thread starts (it inherits the mask) and taken
    # with sigwait: a SIGTERM before "ready" waits pending. A handler setting a
    # threading.Event deadlocked once: it ran while the interrupted Event.wait
    # held the Event's own lock.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        faults = UdpFaults(
            args.loss,
            args.duplicate,
            args.reorder,
            args.corrupt,
            args.delay,
            args.jitter,
            args.reorder_delay,
        )
        relay = UdpRelay(args.target, faults, listen=args.listen, seed=args.seed).start()
    except (UdpRelayError, OSError) as e:
        print(f"udp_relay: error: {e}", file=sys.stderr)
        return 2
    (host, port), (t_host, t_port) = relay.address, relay.target
    print(json.dumps({"listen": f"{host}:{port}", "target": f"{t_host}:{t_port}"}), flush=True)
    signal.sigwait(stop_signals)
    relay.close()
    print(json.dumps(asdict(relay.counts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

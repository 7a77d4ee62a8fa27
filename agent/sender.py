"""Sending heartbeats: destinations, signing, restart-safe sequence numbers, trio UDP.

Destinations. Octavia's amphora agent (``health_sender.py``) sends each
heartbeat to ONE controller of ``controller_ip_port_list``, rotating through
the list (round robin), so each health manager sees a share of an amphora's
heartbeats and the shared database holds the truth. We do the same by default
(``send_to = "round_robin"``); ``send_to = "all"`` sends every heartbeat to
every controller (more traffic, but no manager outage halves the rate).

A send error (network unreachable while the amphora boots, a controller name
that does not resolve yet) is logged and the heartbeat is lost, as in Octavia:
the next one goes out on time, and a persistent failure ends in a failover,
which is the right outcome.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from agent.config import ConfigError, Destination
from agent.seqfile import PersistentSequence
from healthmgr.wire.limits import DEFAULT_SEQ_BLOCK

log = logging.getLogger("amphora-agent")


# ---------------------------------------------------------------- pure parts


def pick_destinations(
    destinations: Sequence[Destination], mode: str, counter: int
) -> tuple[Destination, ...]:
    """Which controllers the ``counter``-th heartbeat goes to."""
    if not destinations:
        return ()
    if mode == "all":
        return tuple(destinations)
    if mode == "round_robin":
        return (destinations[counter % len(destinations)],)
    raise ValueError(f"send_to must be 'round_robin' or 'all', not {mode!r}")


# ---------------------------------------------------------------- UDP


@dataclass
class UdpSender:
    """Trio UDP sockets (one per address family, opened on first use)."""

    destinations: tuple[Destination, ...]
    mode: str = "round_robin"
    _sockets: dict[int, trio.socket.SocketType] = field(default_factory=dict)
    _resolved: dict[Destination, tuple[int, tuple]] = field(default_factory=dict)
    _counter: int = 0

    async def _resolve(self, dest: Destination) -> tuple[int, tuple]:
        cached = self._resolved.get(dest)
        if cached is None:
            infos = await trio.socket.getaddrinfo(dest.host, dest.port, type=trio.socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]  # first match, as Octavia does
            cached = self._resolved[dest] = (family, sockaddr)
        return cached

    def _socket(self, family: int) -> trio.socket.SocketType:
        sock = self._sockets.get(family)
        if sock is None:
            sock = self._sockets[family] = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
        return sock

    async def send(self, datagram: bytes) -> list[tuple[Destination, str | None]]:
        """Send to this round's destination(s); returns (destination, error or None)."""
        targets = pick_destinations(self.destinations, self.mode, self._counter)
        self._counter += 1
        results: list[tuple[Destination, str | None]] = []
        for dest in targets:
            try:
                family, sockaddr = await self._resolve(dest)
                await self._socket(family).sendto(datagram, sockaddr)
                results.append((dest, None))
            except OSError as exc:
                # EMSGSIZE should not happen (the encoder bounds the size) but
                # must not stop the agent either.
                reason = errno.errorcode.get(exc.errno or 0, "") or str(exc)
                results.append((dest, f"{reason}: {exc.strerror or exc}"))
        return results

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


# ---------------------------------------------------------------- sequence numbers


SEQ_FILE = "heartbeat-seq"


def state_file(state_dir: Path) -> Path:
    """Where the agent's sequence reservation is persisted."""
    return state_dir / SEQ_FILE


class SequenceFile(PersistentSequence):
    """Restart-safe sequence numbers (agent/seqfile.py) stored in ``state_dir``.

    Before a number is sent, a reservation above it is stored durably, in
    blocks of ``block`` numbers, so a restarted agent resumes above every number
    it ever sent; the clock (Unix ms) is a floor that also covers a lost or
    corrupt file (reported in ``warning``).
    """

    def __init__(self, state_dir: Path, *, now_ms: int, block: int = DEFAULT_SEQ_BLOCK) -> None:
        super().__init__(state_file(state_dir), floor=now_ms, block=block)


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state directory (private) and check that it is writable."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state_dir {state_dir}: {exc.strerror or exc}") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"state_dir {state_dir}: not writable")

"""A network namespace joined to this one by a veth pair: a link that can be cut and healed.

    this namespace   host_ip  [near] ===== veth ===== [far]  client_ip   namespace
    (relay, servers)                                          (the client process)

:meth:`LinkedNamespace.cut` takes the near end down (:meth:`~LinkedNamespace.heal`
brings it back). The far end loses its
carrier and silently drops what the client sends, and nothing comes back: a
partition, as a firewall dropping packets makes one. Unlike the relay's
blackhole, no kernel acknowledges anything, so the client's TCP timers
(retransmission with ``tcp_user_timeout``, keepalives) are what notice.

Needs root and iproute2 (``ip netns``); the shared servers are not touched:
the client reaches them through a relay listening on ``host_ip``.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


class NamespaceUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no iproute2, ...)."""


def _ip(*args: str, namespace: str | None = None) -> None:
    argv = ["ip", *(["netns", "exec", namespace, "ip"] if namespace else []), *args]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True, slots=True)
class LinkedNamespace:
    name: str
    near: str  # the veth end in this namespace
    host_ip: str  # on ``near``: where the client reaches this namespace
    client_ip: str

    def cut(self) -> None:
        _ip("link", "set", self.near, "down")

    def heal(self) -> None:
        """The near end up again: the kernel restores the /30's route on both sides."""
        _ip("link", "set", self.near, "up")

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        """A process in the namespace."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], text=True, **kw)


@contextlib.contextmanager
def linked_namespace() -> Iterator[LinkedNamespace]:
    """A fresh namespace and veth pair on a random 10.231.x.y/30; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    name, near, far = f"hm-{tag}", f"hm{tag}a", f"hm{tag}b"
    base = random.randrange(0, 1 << 14) * 4  # a /30 inside 10.231.0.0/16
    host_ip = f"10.231.{base >> 8}.{(base & 255) + 1}"
    client_ip = f"10.231.{base >> 8}.{(base & 255) + 2}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise NamespaceUnavailable(f"cannot create a network namespace: {detail.strip()}") from e
    try:
        _ip("link", "add", near, "type", "veth", "peer", "name", far)
        _ip("link", "set", far, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", near)
        _ip("link", "set", near, "up")
        _ip("addr", "add", f"{client_ip}/30", "dev", far, namespace=name)
        _ip("link", "set", far, "up", namespace=name)
        _ip("link", "set", "lo", "up", namespace=name)
        yield LinkedNamespace(name, near, host_ip, client_ip)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", near)  # deletes its peer too
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", name)

"""Real amphorae for the scenarios: HAProxy configured from a topology, and the real agent.

A :class:`RealAmphora` is one amphora of a :class:`~healthmgr.chaos.fleet.Topology`
brought up for real: a ``haproxy`` process whose frontends, backends and
servers are named as the API's configuration names them (listener id,
``<pool id>:<listener id>``, member id), and the real ``amphora-agent``
reading its stats socket and sending signed heartbeats to ``routes``. Both
run inside a network namespace when one is given (healthmgr/chaos/netns.py),
so that cutting its link partitions the amphora, HAProxy and agent together.

The members are served by HAProxy itself (a ``web`` frontend that answers
200, which the agent leaves out of its heartbeats: its name is not a UUID),
so an amphora is two processes. A member's state is set through the admin
stats socket, and what HAProxy then reports is the truth the database must
follow: ``UP``; ``DOWN`` (its health check sent to a closed port, so the
check fails for real); ``MAINT`` and ``DRAIN`` (HAProxy's admin states).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from healthmgr.chaos.fleet import AmphoraTopo
from healthmgr.chaos.netns import LinkedNamespace
from healthmgr.wire.haproxy_status import member_state_from_haproxy
from healthmgr.wire.ids import Id, id_str
from healthmgr.wire.keys import MasterKey, derive_amphora_key
from healthmgr.wire.values import MemberState

Address = tuple[str, int]
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
CHECK_INTER_MS = 100  # HAProxy's health checks: a member is DOWN 2 checks after it fails
CLOSED_PORT = 1  # where a DOWN member's health check goes (nothing listens)

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
    maxconn 200
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 1s
frontend web
    bind 127.0.0.1:{web}
    http-request return status 200 content-type text/plain string "ok"
{proxies}"""
PROXY = """\
frontend {listener}
    bind 127.0.0.1:{port}
    default_backend {pool}:{listener}
backend {pool}:{listener}
    balance roundrobin
    option httpchk GET /
{servers}"""
SERVER = "    server {member} 127.0.0.1:{web} check inter {inter}ms fall 2 rise 1\n"


class AmphoraError(Exception):
    """A real amphora could not be started (HAProxy or the agent said why)."""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(topo: AmphoraTopo, sock: Path, web: int, ports: dict[Id, int]) -> str:
    """The amphora's HAProxy configuration, named as the API's driver names it."""
    proxies = []
    for listener in topo.listeners:
        for pool in listener.pools:
            servers = "".join(
                SERVER.format(member=id_str(m), web=web, inter=CHECK_INTER_MS) for m in pool.members
            )
            proxies.append(
                PROXY.format(
                    listener=id_str(listener.id),
                    pool=id_str(pool.id),
                    port=ports[listener.id],
                    servers=servers,
                )
            )
    return HAPROXY_CFG.format(sock=sock, web=web, proxies="".join(proxies))


@dataclass
class RealAmphora:
    """One amphora: its HAProxy and its agent (see the module's docstring)."""

    topo: AmphoraTopo
    work: Path
    namespace: LinkedNamespace | None = None
    haproxy: subprocess.Popen[str] | None = None
    agent: subprocess.Popen[str] | None = None
    web_port: int = 0
    ports: dict[Id, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return id_str(self.topo.id)

    @property
    def socket(self) -> Path:
        return self.work / "haproxy.sock"

    @property
    def members(self) -> list[Id]:
        return [m for li in self.topo.listeners for p in li.pools for m in p.members]

    # -- the processes ---------------------------------------------------------------

    def start(
        self, haproxy_bin: str, master: MasterKey, routes: Sequence[Address], interval: float
    ) -> RealAmphora:
        """HAProxy, then the agent (which does not wait for anything)."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        self.ports = {li.id: free_port() for li in self.topo.listeners}
        cfg = self.work / "haproxy.cfg"
        cfg.write_text(render(self.topo, self.socket, self.web_port, self.ports))
        self.haproxy = self._spawn([haproxy_bin, "-db", "-f", str(cfg)], "haproxy.log")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.socket.exists():
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise AmphoraError(f"haproxy did not start: {self._tail('haproxy.log')}")
            time.sleep(0.02)
        key = self.work / "heartbeat.key"
        key.write_text(derive_amphora_key(master, self.topo.id).hex() + "\n")
        key.chmod(0o600)
        controllers = [a for host, port in routes for a in ("--controller", f"{host}:{port}")]
        self.agent = self._spawn(
            [
                sys.executable,
                "-m",
                "agent.main",
                "--amphora-id",
                self.id,
                "--key-id",
                str(master.id),
                "--key-file",
                str(key),
                *controllers,
                "--haproxy-socket",
                str(self.socket),
                "--state-dir",
                str(self.work / "state"),
                "--interval",
                f"{interval:g}",
                "--poll-interval",
                f"{interval / 2:g}",
            ],
            "agent.log",
        )
        return self

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[str]:
        if self.namespace is not None:
            argv = ["ip", "netns", "exec", self.namespace.name, *argv]
        with (self.work / log).open("a") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def _tail(self, log: str, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join((self.work / log).read_text().strip().splitlines()[-lines:])
        return "(no output)"

    def kill(self) -> None:
        """The amphora dies: its agent and HAProxy SIGKILLed."""
        for proc in (self.agent, self.haproxy):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        """Stop the agent, then HAProxy (SIGTERM, SIGKILL after a while)."""
        for proc in (self.agent, self.haproxy):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.agent, self.haproxy))

    def problem(self) -> str | None:
        """Why this amphora is not running as it should (None: it is)."""
        for name, proc in (("agent", self.agent), ("haproxy", self.haproxy)):
            if proc is not None and proc.poll() is not None:
                tail = self._tail(f"{name}.log")
                return f"{name} of {self.id} exited ({proc.returncode}): {tail}"
        return None

    # -- the stats socket --------------------------------------------------------------

    def command(self, text: str) -> str:
        """One command on HAProxy's admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(text.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def stat(self) -> list[dict[str, str]]:
        """``show stat``, one dict per row."""
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def _members(self, rows: list[dict[str, str]]) -> dict[Id, MemberState]:
        """What HAProxy says of every member (the agent's mapping of its words)."""
        want = {id_str(m): m for m in self.members}
        out = {}
        for row in rows:
            if row["svname"] in want and ":" in row["pxname"]:
                weight = int(row["weight"]) if row.get("weight") else None
                out[want[row["svname"]]] = member_state_from_haproxy(row["status"], weight)
        return out

    def reported(self) -> tuple[dict[Id, MemberState], set[Id]]:
        """What its heartbeats say now: every member's state, and the pools that are DOWN."""
        pools = {
            f"{id_str(p.id)}:{id_str(li.id)}": p.id for li in self.topo.listeners for p in li.pools
        }
        rows = self.stat()
        down = {
            pools[r["pxname"]]
            for r in rows
            if r["svname"] == "BACKEND" and r["pxname"] in pools and r["status"] == "DOWN"
        }
        return self._members(rows), down

    def settled(self) -> bool:
        """No server between states (``UP 1/2``, ``DOWN 1/1``): what it says will hold."""
        return all(" " not in row["status"] for row in self.stat() if row["type"] == "2")

    def set_member(self, member: Id, state: MemberState) -> None:
        """Put a member in ``state`` (UP, DOWN, MAINT or DRAIN) through the admin socket."""
        server = self._server(member)
        port = CLOSED_PORT if state is MemberState.DOWN else self.web_port
        admin = {MemberState.MAINT: "maint", MemberState.DRAIN: "drain"}.get(state, "ready")
        for cmd in (f"set server {server} check-port {port}", f"set server {server} state {admin}"):
            answer = self.command(cmd).strip()
            if answer:
                raise AmphoraError(f"haproxy refused {cmd!r}: {answer}")

    def _server(self, member: Id) -> str:
        for li in self.topo.listeners:
            for pool in li.pools:
                if member in pool.members:
                    return f"{id_str(pool.id)}:{id_str(li.id)}/{id_str(member)}"
        raise KeyError(id_str(member))

    def listener_counters(self) -> dict[str, tuple[int, int, int, int]]:
        """Per listener: bytes in, bytes out, connections, request errors (HAProxy's counters)."""
        ids = {id_str(li.id) for li in self.topo.listeners}
        return {
            row["pxname"]: (
                int(row["bin"] or 0),
                int(row["bout"] or 0),
                int(row["stot"] or 0),
                int(row["ereq"] or 0),
            )
            for row in self.stat()
            if row["pxname"] in ids and row["svname"] == "FRONTEND"
        }

    def traffic(self, requests: int) -> int:
        """HTTP requests through every listener (only outside a namespace); answered 200."""
        if self.namespace is not None:
            raise AmphoraError("traffic reaches an amphora outside a namespace only")
        ok = 0
        for port in self.ports.values():
            for _ in range(requests):
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp,
                ):
                    resp.read()
                    ok += resp.status == 200
        return ok


__all__ = ["AmphoraError", "RealAmphora", "haproxy_binary", "render"]

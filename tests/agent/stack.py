"""A whole amphora and its manager, for real: what a member's death takes to reach the database.

A fresh database holding the seed load balancer (one listener, one pool,
``members`` members), one ``python -m http.server`` per member, HAProxy
configured from those ids with ``check inter <inter_ms> fall <fall> rise 1``,
the real ``healthmgr serve`` and the real ``amphora-agent``, each a
subprocess. Used by tests/agent/test_bad_news.py and
tests/bench/agent_latency.py. HAProxy's stderr is read by a thread that stamps
each line with ``time.monotonic()`` on arrival, so the moment HAProxy took a
server down is known to a millisecond or so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from healthmgr.wire.ids import Id, id_str
from healthmgr.wire.keys import derive_amphora_key
from tests.agent.agent_testlib import free_port, start_web, stop, wait_for
from tests.db.factories import SeedIds, make_seed_lb
from tests.manager.conftest import migrated_engine
from tests.manager.harness import MASTER, RunningDaemon, start_daemon, write_config

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level user
    maxconn 200
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend {listener}
    bind 127.0.0.1:{port}
    default_backend {pool}:{listener}
backend {pool}:{listener}
    balance roundrobin
    option httpchk GET /
{servers}
"""
# "[WARNING]  (123) : Server <pool>:<listener>/<member> is DOWN, reason: ..."
HAPROXY_STATE = re.compile(r"Server [^/\s]+/(\S+) is (UP|DOWN)\b")
# The manager's own defaults (healthmgr/config/sections.py): the figures hold for them.
MANAGER_DEFAULTS = {
    "heartbeat_interval": 10.0,
    "heartbeat_timeout": 60.0,
    "health_check_interval": 3.0,
    "flush_interval": 0.25,
}


def when(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """The monotonic time ``predicate`` first held, checked every 10 ms (a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


@dataclass
class LineLog:
    """A child's output lines, each with the monotonic time it arrived."""

    lines: list[tuple[float, str]] = field(default_factory=list)

    def follow(self, stream: Any) -> None:
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@dataclass
class Stack:
    workdir: Path
    haproxy_bin: str
    members: int = 2
    inter_ms: int = 200
    fall: int = 2
    agent_options: Sequence[str] = ()
    manager_options: dict[str, Any] = field(default_factory=dict)
    engine: sa.Engine | None = None
    seed: SeedIds | None = None
    web_ports: list[int] = field(default_factory=list)
    webs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    haproxy: subprocess.Popen[str] | None = None
    haproxy_log: LineLog = field(default_factory=LineLog)
    manager: RunningDaemon | None = None
    agent: subprocess.Popen[str] | None = None
    agent_log: LineLog = field(default_factory=LineLog)

    @property
    def detection_s(self) -> float:
        """HAProxy's own detection time: ``inter x fall``."""
        return self.inter_ms * self.fall / 1000

    def start(self, db_url: str) -> None:
        """Database, web servers, HAProxy, manager, agent; returns once all members are ONLINE."""
        self.engine = migrated_engine(db_url)
        self.seed = make_seed_lb(
            self.engine, members=self.members, operating_status="OFFLINE", with_health=False
        )
        self.web_ports = [free_port() for _ in range(self.members)]
        (self.workdir / "www").mkdir(exist_ok=True)
        (self.workdir / "www" / "index.html").write_text("hello\n")
        for i in range(self.members):
            self.start_member(i)
        self._start_haproxy()
        self._start_manager(db_url)
        self._start_agent()
        wait_for(lambda: self.statuses() == ["ONLINE"] * self.members, 30, "every member ONLINE")

    # ---------------------------------------------------------------- members

    def member_id(self, index: int) -> str:
        assert self.seed is not None
        return id_str(self.seed.members[index])

    def start_member(self, index: int) -> None:
        self.webs[index] = start_web(self.web_ports[index], self.workdir / "www")

    def kill_member(self, index: int) -> float:
        """SIGKILL the member's web server; the monotonic time of the kill."""
        proc = self.webs.pop(index)
        killed_at = time.monotonic()
        proc.kill()
        proc.wait()
        return killed_at

    def status(self, index: int) -> str:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    sa.text("SELECT operating_status FROM member WHERE id = :i"),
                    {"i": self.member_id(index)},
                ).scalar()
            )

    def statuses(self) -> list[str]:
        return [self.status(i) for i in range(self.members)]

    def haproxy_changed(self, index: int, state: str, after: float) -> float | None:
        """When HAProxy logged the member going ``state`` (UP/DOWN) after ``after``."""
        member = self.member_id(index)
        for at, line in list(self.haproxy_log.lines):
            found = HAPROXY_STATE.search(line)
            if at >= after and found and found.groups() == (member, state):
                return at
        return None

    # ---------------------------------------------------------------- processes

    def _start_haproxy(self) -> None:
        assert self.seed is not None
        sock = self.workdir / "haproxy.sock"
        servers = "\n".join(
            f"    server {self.member_id(i)} 127.0.0.1:{port} "
            f"check inter {self.inter_ms} fall {self.fall} rise 1"
            for i, port in enumerate(self.web_ports)
        )
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(
            HAPROXY_CFG.format(
                sock=sock,
                listener=id_str(self.seed.listener),
                pool=id_str(self.seed.pool),
                port=free_port(),
                servers=servers,
            )
        )
        self.haproxy = subprocess.Popen(
            [self.haproxy_bin, "-db", "-f", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.haproxy_log.follow(self.haproxy.stdout)
        wait_for(lambda: sock.exists() or self.haproxy.poll() is not None, 10, "HAProxy's socket")
        if self.haproxy.poll() is not None:
            raise AssertionError(f"haproxy exited:\n{self.haproxy_log.text()}")

    def _start_manager(self, db_url: str) -> None:
        config = write_config(
            self.workdir / "healthmgr.toml",
            db_url,
            sections={"health_manager": {**MANAGER_DEFAULTS, **self.manager_options}},
        )
        self.manager = start_daemon(config)

    def _start_agent(self) -> None:
        assert self.seed is not None and self.manager is not None
        amphora: Id = self.seed.amphora
        key_file = self.workdir / "heartbeat.key"
        key_file.write_text(derive_amphora_key(MASTER, amphora).hex() + "\n")
        host, port = self.manager.address
        self.agent = subprocess.Popen(
            [
                sys.executable, "-m", "agent.main",
                "--amphora-id", id_str(amphora),
                "--key-id", str(MASTER.id),
                "--key-file", str(key_file),
                "--controller", f"{host}:{port}",
                "--haproxy-socket", str(self.workdir / "haproxy.sock"),
                "--state-dir", str(self.workdir / "agent-state"),
                *self.agent_options,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.agent_log.follow(self.agent.stderr)

    def close(self) -> None:
        """Stop everything this stack started, agent first."""
        if self.agent is not None:
            stop(self.agent)
        if self.manager is not None:
            self.manager.stop()
        if self.haproxy is not None:
            stop(self.haproxy)
        for proc in self.webs.values():
            stop(proc)
        if self.engine is not None:
            self.engine.dispose()

"""A real HAProxy with one listener, one pool and two members (two tiny web servers)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agent_testlib import free_port, start_web, stop, wait_for

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
    maxconn 200
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
frontend {listener}
    bind 127.0.0.1:{port}
    maxconn 100
    default_backend {pool}:{listener}
backend {pool}:{listener}
    balance roundrobin
    option httpchk GET /
    server {member1} 127.0.0.1:{web1} check inter 200 fall 2 rise 1
    server {member2} 127.0.0.1:{web2} check inter 200 fall 2 rise 1
"""


@dataclass
class LoadBalancer:
    listener_id: str
    pool_id: str
    member_ids: tuple[str, str]
    port: int
    socket_path: Path
    haproxy: subprocess.Popen
    webs: list[subprocess.Popen] = field(default_factory=list)


@pytest.fixture
def haproxy_lb(haproxy_bin: str, tmp_path: Path) -> Iterator[LoadBalancer]:
    """HAProxy serving one listener -> pool -> two members; both members UP at start."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello\n")
    web_ports = (free_port(), free_port())
    webs = [start_web(p, tmp_path / "www") for p in web_ports]
    lb = LoadBalancer(
        listener_id=str(uuid.uuid4()),
        pool_id=str(uuid.uuid4()),
        member_ids=(str(uuid.uuid4()), str(uuid.uuid4())),
        port=free_port(),
        socket_path=tmp_path / "stats.sock",
        haproxy=None,  # type: ignore[arg-type]
        webs=webs,
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        HAPROXY_CFG.format(
            sock=lb.socket_path,
            stats_port=free_port(),
            listener=lb.listener_id,
            pool=lb.pool_id,
            port=lb.port,
            member1=lb.member_ids[0],
            member2=lb.member_ids[1],
            web1=web_ports[0],
            web2=web_ports[1],
        )
    )
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        lb.haproxy = subprocess.Popen(
            [haproxy_bin, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(
            lambda: lb.socket_path.exists() or lb.haproxy.poll() is not None,
            what="haproxy stats socket",
        )
        if lb.haproxy.poll() is not None:
            raise AssertionError(f"haproxy exited: {log.read_text()}")
        yield lb
    finally:
        stop(lb.haproxy)
        for web in webs:
            stop(web)

"""Helpers for the agent tests: free ports, tiny web servers, a real HAProxy, process teardown,
keys, UDP.

Imported as ``tests.agent.agent_testlib`` (never through ``conftest``, which names a different
module depending on which directories pytest collected).
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from healthmgr.wire.keys import Keyring, MasterKey, derive_amphora_key
from healthmgr.wire.native import decode_native
from healthmgr.wire.values import Heartbeat
from tests.patience import wait_until as wait_for

MASTER = MasterKey(7, b"agent-e2e-master-secret-0123456789")
KEYS = Keyring([MASTER], 7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_web(port: int, directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: _port_open(port), what=f"web server on {port}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def start_haproxy_lb(haproxy_bin: str, tmp_path: Path) -> LoadBalancer:
    """HAProxy serving one listener -> pool -> two members (two tiny web servers)."""
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
    except BaseException:
        stop_haproxy_lb(lb)
        raise
    return lb


def stop_haproxy_lb(lb: LoadBalancer) -> None:
    stop(lb.haproxy)
    for web in lb.webs:
        stop(web)


def agent_cmd(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from agent.main import main; sys.exit(main())",
        *args,
    ]


def provision(tmp_path: Path, amphora_id: str) -> Path:
    """The amphora's key file, as `healthmgr keys derive` prints it: the command in this
    process (its real process is tests/cli/test_keys_cli.py::test_real_process)."""
    from tests.cli.clitest import cli

    master_file = tmp_path / "master.key"
    master_file.write_text(MASTER.secret.decode() + "\n")
    derived = cli(
        "keys", "derive", amphora_id, "--master-key-file", str(master_file),
        "--key-id", str(MASTER.id),
    )  # fmt: skip
    assert derived.returncode == 0, derived.stderr
    key_file = tmp_path / "heartbeat.key"
    key_file.write_text(derived.stdout)
    assert derive_amphora_key(MASTER, uuid.UUID(amphora_id).bytes).hex() in derived.stdout
    return key_file


def receive(sock: socket.socket, timeout: float = 10.0) -> Heartbeat:
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "no heartbeat arrived"
    return decode_native(sock.recv(65536), KEYS)


def silent(sock: socket.socket, seconds: float) -> bool:
    """True when no datagram arrives within ``seconds``."""
    ready, _, _ = select.select([sock], [], [], seconds)
    return not ready


def drain(sock: socket.socket) -> list[Heartbeat]:
    """Every heartbeat already waiting on the socket."""
    out = []
    while not silent(sock, 0):
        out.append(decode_native(sock.recv(65536), KEYS))
    return out


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock

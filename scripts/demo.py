#!/usr/bin/env python3
"""The seed scenario, for real, on SQLite, in seconds.

Creates a load balancer as the API would (rows in a fresh SQLite database),
runs it on a real HAProxy with two tiny web servers, starts the real
``healthmgr serve`` and the real ``amphora-agent``, and then shows:
traffic round robin, everything ONLINE, web-2 killed (member ERROR, pool and
load balancer DEGRADED, traffic only to web-1), the amphora killed (a
failover request after ``heartbeat_timeout``), and a clean shutdown.

Every child runs in its own process group and is stopped in ``finally`` (also
on Ctrl-C, SIGTERM or a failed step). Exit status: 0 when every step showed
what it should, 1 with a one-line reason otherwise, 130 when interrupted.
See docs/demo.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from healthmgr.db.models import (
    Amphora,
    AmphoraHealth,
    FailoverRequest,
    HealthMonitor,
    Listener,
    LoadBalancer,
    Member,
    Pool,
)
from healthmgr.rules import constants as C

T = TypeVar("T")

# The manager and agent at demo speed (production defaults: 10 s, 60 s, 3 s).
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 1.0
# HAProxy's checks run this many times faster than the health monitor asks
# (delay 10 s -> inter 1 s, timeout 10 s -> timeout check 1 s).
MONITOR_SPEEDUP = 10
MASTER_KEY_ID = 1
# HAProxy's own log line when a check takes a server down.
HAPROXY_DOWN = re.compile(r'Server \S+/(\S+) is DOWN, reason: ([^,]+), info: "([^"]*)"')
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a process group at cleanup


class DemoFailed(Exception):
    """A step did not show what it should: the one-line reason."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP reached the demo: clean up and exit 130.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` may take it."""


# The signals received. A handler's exception can be lost: raised while a __del__ or a
# weakref callback runs (a subprocess, a pooled connection), Python prints and drops it.
# So every wait also looks here (check_interrupted) and raises again.
RECEIVED: list[str] = []


def check_interrupted() -> None:
    if RECEIVED:
        raise Interrupted(RECEIVED[0])


# --- output ---------------------------------------------------------------------------------


class Out:
    """Readable, timestamped lines (seconds since the demo started)."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def step(self, number: int, title: str) -> None:
        self._write(f"\n[{self.elapsed():5.1f}s] {number}. {title}")

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            self._write(f"         {line}")

    def cmd(self, argv: Sequence[str]) -> None:
        self.say("$ " + " ".join(_short(a) for a in argv))

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _short(arg: str) -> str:
    """The command as an operator would type it: console scripts by name."""
    return Path(arg).name if arg.endswith(("/healthmgr", "/amphora-agent")) else arg


# --- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Every child of the demo; each in its own process group (session)."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path, cwd: Path | None = None) -> Child:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    @staticmethod
    def send(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, sig)

    def stop(self, child: Child, sig: int = signal.SIGTERM, timeout: float = STOP_GRACE) -> int:
        """Signal the child's process group and reap it; SIGKILL after ``timeout``."""
        if child.proc.poll() is None:
            self.send(child, sig)
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send(child, signal.SIGKILL)
                child.proc.wait()
        # Anything the child left in its group goes too.
        self.send(child, signal.SIGKILL)
        return child.proc.returncode

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop(child)


# --- small helpers --------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """``check()`` until it returns something other than None/False, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        check_interrupted()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} (gave up after {timeout:.0f} s)")
        time.sleep(interval)


def console_script(name: str) -> list[str]:
    """The installed console script beside this Python, else ``python -m``."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    module = {"healthmgr": "healthmgr", "amphora-agent": "agent.main"}[name]
    return [sys.executable, "-m", module]


def run_cli(out: Out, argv: list[str], cwd: Path | None = None) -> str:
    out.cmd(argv)
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DemoFailed(f"{_short(argv[0])} {argv[1]} failed (exit {done.returncode}): {reason}")
    return done.stdout


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon (other lines are skipped)."""
    events = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def show_event(event: dict[str, Any]) -> str:
    """A JSON log line, readable: level, event, then the other fields."""
    skip = {"event", "level", "logger", "timestamp"}
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in skip)
    return f"{event.get('level', '?')}: {event.get('event')}  {fields}"


def last_line(path: Path, limit: int = 200) -> str:
    """The last line of a child's log, readable (JSON lines via show_event), at most ``limit``."""
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        if lines:
            try:
                text = show_event(json.loads(lines[-1]))
            except (ValueError, AttributeError):
                text = lines[-1]
            return text if len(text) <= limit else text[: limit - 1] + "…"
    return "(none)"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# --- the load balancer, as the API would create it ------------------------------------------


@dataclass(frozen=True)
class Seed:
    load_balancer: str
    amphora: str
    listener: str
    listener_port: int
    pool: str
    members: dict[str, str]  # name -> id
    member_ports: dict[str, int]  # name -> port


def create_load_balancer(engine: sa.Engine, listener_port: int, web_ports: list[int]) -> Seed:
    """The rows the API (and its worker) leave behind: provisioning ACTIVE, statuses OFFLINE.

    Statuses start OFFLINE, as Octavia creates them; the manager turns them
    ONLINE from the first heartbeat. No amphora_health row: the manager
    creates it from the first heartbeat, as Octavia's does.
    """
    ids = {k: str(uuid.uuid4()) for k in ("lb", "amp", "listener", "pool", "hm")}
    names = [f"web-{i + 1}" for i in range(len(web_ports))]
    members = {n: str(uuid.uuid4()) for n in names}
    now = utcnow()
    common = {"provisioning_status": C.ACTIVE, "created_at": now, "updated_at": now}
    rows: list[tuple[Any, list[dict[str, Any]]]] = [
        (LoadBalancer, [dict(id=ids["lb"], name="lb1", enabled=True, topology=C.SINGLE,
                             provider="amphora", operating_status=C.OFFLINE, **common)]),
        (Pool, [dict(id=ids["pool"], load_balancer_id=ids["lb"], name="pool1", protocol="HTTP",
                     lb_algorithm="ROUND_ROBIN", enabled=True, operating_status=C.OFFLINE,
                     **common)]),
        (Listener, [dict(id=ids["listener"], load_balancer_id=ids["lb"], name="listener1",
                         protocol="HTTP", protocol_port=listener_port,
                         default_pool_id=ids["pool"], enabled=True,
                         operating_status=C.OFFLINE, **common)]),
        (Member, [dict(id=members[n], pool_id=ids["pool"], name=n, ip_address="127.0.0.1",
                       protocol_port=p, weight=1, backup=False, enabled=True,
                       operating_status=C.OFFLINE, **common)
                  for n, p in zip(names, web_ports, strict=True)]),
        # API: delay 10, timeout 10, max_retries 2 (rise), max_retries_down 3 (its default: fall).
        (HealthMonitor, [dict(id=ids["hm"], pool_id=ids["pool"], name="hm1", type="HTTP",
                              delay=10, timeout=10, rise_threshold=2, fall_threshold=3,
                              http_method="GET", url_path="/", expected_codes="200",
                              enabled=True, operating_status=C.ONLINE, **common)]),
        (Amphora, [dict(id=ids["amp"], compute_id=str(uuid.uuid4()), status=C.ALLOCATED,
                        load_balancer_id=ids["lb"], lb_network_ip="127.0.0.1",
                        role=C.STANDALONE, created_at=now, updated_at=now)]),
    ]  # fmt: skip
    with engine.begin() as conn:
        for table, values in rows:
            conn.execute(sa.insert(table), values)
    return Seed(
        load_balancer=ids["lb"],
        amphora=ids["amp"],
        listener=ids["listener"],
        listener_port=listener_port,
        pool=ids["pool"],
        members=members,
        member_ports=dict(zip(names, web_ports, strict=True)),
    )


# --- HAProxy configuration (what the amphora driver would render) ---------------------------

HAPROXY_CFG = """\
# HAProxy configuration of load balancer {lb} on amphora {amp}.
# Names follow Octavia: frontend = listener id, backend = <pool id>:<listener id>,
# server = member id. Health monitor at demo speed: delay {delay}s -> inter {inter},
# timeout {timeout}s -> timeout check {tcheck}; fall/rise = max_retries_down/max_retries.
global
    maxconn 1000
    stats socket {sock} mode 600 level user

defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

frontend {listener}
    bind 127.0.0.1:{port}
    mode http
    default_backend {pool}:{listener}

backend {pool}:{listener}
    mode http
    balance {algorithm}
    timeout check {tcheck}
    option httpchk {method} {path}
    http-check expect rstatus {codes}
{servers}
"""


def haproxy_config(engine: sa.Engine, seed: Seed, sock: Path) -> str:
    """Render the configuration from the database rows, as the amphora driver does."""
    with engine.connect() as conn:
        hm = conn.execute(
            sa.select(HealthMonitor).where(HealthMonitor.c.pool_id == seed.pool)
        ).one()
        pool = conn.execute(sa.select(Pool).where(Pool.c.id == seed.pool)).one()
        members = conn.execute(
            sa.select(Member).where(Member.c.pool_id == seed.pool).order_by(Member.c.name)
        ).all()
    inter = f"{hm.delay * 1000 // MONITOR_SPEEDUP}ms"
    tcheck = f"{hm.timeout * 1000 // MONITOR_SPEEDUP}ms"
    servers = "\n".join(
        f"    server {m.id} {m.ip_address}:{m.protocol_port} weight {m.weight} "
        f"check inter {inter} fall {hm.fall_threshold} rise {hm.rise_threshold}"
        for m in members
    )
    return HAPROXY_CFG.format(
        lb=seed.load_balancer, amp=seed.amphora, delay=hm.delay, timeout=hm.timeout,
        inter=inter, tcheck=tcheck, sock=sock, listener=seed.listener, port=seed.listener_port,
        pool=seed.pool, algorithm=pool.lb_algorithm.lower().replace("_", ""),
        method=hm.http_method, path=hm.url_path, codes=hm.expected_codes, servers=servers,
    )  # fmt: skip


# --- reading the database -------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A status tree as `healthmgr status show LB -f json` gives it (Octavia's shape)."""

    lb: dict[str, Any]

    @property
    def listener(self) -> dict[str, Any]:
        return self.lb["listeners"][0]

    @property
    def pool(self) -> dict[str, Any]:
        return self.listener["pools"][0]

    def member(self, name: str) -> str:
        return next(m["operating_status"] for m in self.pool["members"] if m["name"] == name)

    def all_online(self) -> bool:
        statuses = [self.lb, self.listener, self.pool, *self.pool["members"]]
        return all(node["operating_status"] == C.ONLINE for node in statuses)


def status_show(workdir: Path, *fmt: str) -> str:
    """`healthmgr status show lb1` against the demo's database (its stdout)."""
    argv = [*console_script("healthmgr"), "status", "show", "lb1", "--config", "healthmgr.toml"]
    done = subprocess.run(
        [*argv, *fmt], cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DemoFailed(f"healthmgr status show failed (exit {done.returncode}): {reason}")
    return done.stdout


def read_tree(workdir: Path) -> Tree:
    return Tree(json.loads(status_show(workdir, "-f", "json"))["statuses"]["loadbalancer"])


def read_failover(engine: sa.Engine, seed: Seed) -> tuple[Any, Any] | None:
    """(failover_request row, amphora_health row) once a request for the amphora exists and
    its driver is done with it (not RUNNING: the claim writes RUNNING, the record driver then
    hands it off; a loaded machine can show the moment in between)."""
    with engine.connect() as conn:
        request = conn.execute(
            sa.select(FailoverRequest).where(FailoverRequest.c.amphora_id == seed.amphora)
        ).first()
        if request is None or request.state == C.FAILOVER_RUNNING:
            return None
        health = conn.execute(
            sa.select(AmphoraHealth).where(AmphoraHealth.c.amphora_id == seed.amphora)
        ).one()
        amphora_status = conn.execute(
            sa.select(Amphora.c.status).where(Amphora.c.id == seed.amphora)
        ).scalar_one()
    return request, (health, amphora_status)


# --- traffic --------------------------------------------------------------------------------


def get(port: int) -> str:
    """One request on a new connection (so round robin shows): the body, or the error."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
        return body if response.status == 200 else f"HTTP {response.status}"
    except OSError as exc:
        return f"error: {exc}"
    finally:
        conn.close()


def show_traffic(out: Out, port: int, count: int) -> list[str]:
    answers = [get(port) for _ in range(count)]
    out.say(f"GET http://127.0.0.1:{port}/ x{count} -> " + ", ".join(answers))
    return answers


# --- the demo -------------------------------------------------------------------------------


@dataclass
class Demo:
    out: Out
    workdir: Path
    haproxy_bin: str
    procs: Processes = field(default_factory=Processes)
    engine: sa.Engine | None = None
    seed: Seed | None = None
    children: dict[str, Child] = field(default_factory=dict)
    manager_port: int = 0
    agent_started: float = 0.0
    check_options: str = ""

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.workdir / 'healthmgr.db'}"

    def run(self) -> None:
        for step in (
            self.step_database,
            self.step_load_balancer,
            self.step_start,
            self.step_traffic,
            self.step_online,
            self.step_kill_member,
            self.step_kill_amphora,
            self.step_shutdown,
        ):
            check_interrupted()
            step()
        check_interrupted()

    def close(self) -> None:
        """Stop every child (each process group) and release the database."""
        self.procs.stop_all()
        if self.engine is not None:
            self.engine.dispose()

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None) -> Child:
        child = self.procs.start(name, argv, self.workdir / f"{name}.log", cwd=cwd)
        self.children[name] = child
        return child

    def alive(self, *names: str) -> None:
        for name in names:
            child = self.children[name]
            code = child.proc.poll()
            if code is not None:
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else (
                    f"exited with status {code}")  # fmt: skip
                raise DemoFailed(f"{name} {how}; last log line: {last_line(child.log)}")

    # 1
    def step_database(self) -> None:
        self.out.step(1, "A fresh SQLite database, schema from the migrations")
        self.out.say(f"work directory {self.workdir}")
        text = run_cli(
            self.out, [*console_script("healthmgr"), "db", "upgrade", "--db-url", self.db_url]
        )
        self.out.say(text.strip())
        self.engine = make_engine(self.db_url)

    # 2
    def step_load_balancer(self) -> None:
        assert self.engine is not None
        self.out.step(2, "Create the load balancer as the API would (rows in the database)")
        web_ports = [free_port(), free_port()]
        for i, port in enumerate(web_ports):
            name = f"web-{i + 1}"
            root = self.workdir / name
            root.mkdir()
            (root / "index.html").write_text(f"{name}\n")
            self.start(
                name,
                [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                cwd=root,
            )
        for i, port in enumerate(web_ports):
            name = f"web-{i + 1}"
            poll(
                lambda p=port, n=name: self.alive(n) or port_open(p),
                10,
                f"{name} did not start listening on port {port}",
            )
            self.out.say(
                f"{name}: python -m http.server on 127.0.0.1:{port} "
                f"(pid {self.children[name].proc.pid}), answers '{name}'"
            )
        self.seed = seed = create_load_balancer(self.engine, free_port(), web_ports)
        self.out.say(
            f"load balancer lb1    {seed.load_balancer}  ACTIVE, topology SINGLE\n"
            f"amphora              {seed.amphora}  ALLOCATED, STANDALONE\n"
            f"listener listener1   {seed.listener}  HTTP, port {seed.listener_port}\n"
            f"pool pool1           {seed.pool}  HTTP, ROUND_ROBIN\n"
            + "".join(
                f"member {n:<13} {i}  127.0.0.1:{seed.member_ports[n]}\n"
                for n, i in seed.members.items()
            )
            + "health monitor       HTTP GET /, delay 10, timeout 10, max-retries 2"
        )

    # 3
    def step_start(self) -> None:
        assert self.engine is not None and self.seed is not None
        seed = self.seed
        self.out.step(3, "Start HAProxy (the amphora), the manager and the agent")
        sock = self.workdir / "haproxy.sock"
        cfg = self.workdir / "haproxy.cfg"
        text = haproxy_config(self.engine, seed, sock)
        cfg.write_text(text)
        self.check_options = next(
            line.split(" check ", 1)[1]
            for line in text.splitlines()
            if line.lstrip().startswith("server ")
        )
        self.out.say(
            f"{cfg.name}: frontend {seed.listener[:8]}…, backend "
            f"{seed.pool[:8]}…:{seed.listener[:8]}…, 2 servers with "
            f"'check {self.check_options}' (demo speed)"
        )
        check = subprocess.run(
            [self.haproxy_bin, "-c", "-q", "-f", str(cfg)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise DemoFailed(f"HAProxy rejected {cfg}: {check.stderr.strip().splitlines()[-1:]}")
        haproxy = self.start("haproxy", [self.haproxy_bin, "-db", "-f", str(cfg)])
        poll(
            lambda: self.alive("haproxy") or (sock.exists() and port_open(seed.listener_port)),
            10,
            "HAProxy did not open its stats socket and listener",
        )
        self.out.say(
            f"haproxy -db -f {cfg.name} (pid {haproxy.proc.pid}), "
            f"listener on 127.0.0.1:{seed.listener_port}"
        )

        config = self.write_manager_config()
        manager = self.start(
            "manager", [*console_script("healthmgr"), "serve", "--config", str(config)]
        )
        self.out.say(f"$ healthmgr serve --config {config.name}   (pid {manager.proc.pid})")
        poll(
            lambda: self.alive("manager") or self.manager_logged("healthmgr serving"),
            20,
            "the manager did not log 'healthmgr serving'",
        )
        self.out.say(
            f"manager serving: UDP 127.0.0.1:{self.manager_port}, heartbeat_interval "
            f"{HEARTBEAT_INTERVAL:g} s, heartbeat_timeout {HEARTBEAT_TIMEOUT:g} s, "
            f"health_check_interval {HEALTH_CHECK_INTERVAL:g} s, failover driver record"
        )

        key_file = self.workdir / "heartbeat.key"
        key = run_cli(
            self.out,
            [*console_script("healthmgr"), "keys", "derive", seed.amphora, "--config", config.name],
            cwd=self.workdir,
        )
        key_file.write_text(key)
        key_file.chmod(0o400)
        self.out.say(
            f"  > {key_file.name}  (the amphora's own key, HKDF of master key {MASTER_KEY_ID})"
        )
        agent_cfg = self.write_agent_config(key_file, sock)
        self.agent_started = time.monotonic()
        agent = self.start("agent", [*console_script("amphora-agent"), "--config", str(agent_cfg)])
        self.out.say(
            f"$ amphora-agent --config {agent_cfg.name}   (pid {agent.proc.pid}), "
            f"heartbeat every {HEARTBEAT_INTERVAL:g} s"
        )

    def write_manager_config(self) -> Path:
        self.manager_port = free_port(socket.SOCK_DGRAM)
        master = self.workdir / "master-1.key"
        master.write_text(secrets.token_hex(32) + "\n")
        master.chmod(0o400)
        path = self.workdir / "healthmgr.toml"
        path.write_text(
            "# healthmgr at demo speed (production defaults: 10, 60, 3)\n"
            "[health_manager]\n"
            'bind_ip = "127.0.0.1"\n'
            f"bind_port = {self.manager_port}\n"
            f"heartbeat_interval = {HEARTBEAT_INTERVAL}\n"
            f"heartbeat_timeout = {HEARTBEAT_TIMEOUT}\n"
            f"health_check_interval = {HEALTH_CHECK_INTERVAL}\n"
            'manager_id = "demo-manager"\n'
            "\n[keys]\n"
            f"active_key_id = {MASTER_KEY_ID}\n"
            "[[keys.master]]\n"
            f"id = {MASTER_KEY_ID}\n"
            f"secret_file = {json.dumps(str(master))}\n"
            "\n[database]\n"
            f"connection = {json.dumps(self.db_url)}\n"
            '\n[failover]\ndriver = "record"\n'
            '\n[logging]\nlevel = "INFO"\nformat = "json"\n'
        )
        return path

    def write_agent_config(self, key_file: Path, sock: Path) -> Path:
        assert self.seed is not None
        path = self.workdir / "amphora-agent.toml"
        path.write_text(
            "[amphora_agent]\n"
            f'amphora_id = "{self.seed.amphora}"\n'
            f"haproxy_socket = {json.dumps(str(sock))}\n"
            f"state_dir = {json.dumps(str(self.workdir / 'agent-state'))}\n"
            "\n[health_manager]\n"
            f'controller_ip_port_list = ["127.0.0.1:{self.manager_port}"]\n'
            f"heartbeat_interval = {HEARTBEAT_INTERVAL}\n"
            f"heartbeat_key_file = {json.dumps(str(key_file))}\n"
        )
        return path

    def manager_logged(self, event: str) -> dict[str, Any] | None:
        return next(
            (e for e in log_events(self.children["manager"].log) if e.get("event") == event), None
        )

    # 4
    def step_traffic(self) -> None:
        assert self.seed is not None
        self.out.step(4, "Traffic through the listener, round robin")
        answers = show_traffic(self.out, self.seed.listener_port, 6)
        if set(answers) != {"web-1", "web-2"}:
            raise DemoFailed(f"expected answers from web-1 and web-2, got {answers}")

    # 5
    def step_online(self) -> None:
        self.out.step(5, "Status tree (from the database), once the manager has it ONLINE")
        self.wait_tree(Tree.all_online, 20, "everything ONLINE", ("agent", "manager", "haproxy"))
        self.show_tree()
        self.out.say(
            f"everything ONLINE {time.monotonic() - self.agent_started:.1f} s after "
            "the agent started"
            " (statuses were OFFLINE as created)"
        )

    # 6
    def step_kill_member(self) -> None:
        assert self.seed is not None
        self.out.step(6, "Kill web-2")
        web2 = self.children["web-2"]
        self.procs.stop(web2, signal.SIGKILL)
        t0 = time.monotonic()
        self.out.say(f"kill -KILL {web2.proc.pid}   (web-2)")
        self.wait_tree(
            lambda t: (
                t.member("web-2") == C.ERROR
                and t.pool["operating_status"] == C.DEGRADED
                and t.lb["operating_status"] == C.DEGRADED
            ),
            20,
            "web-2 ERROR, pool and load balancer DEGRADED",
            ("agent", "manager", "haproxy"),
        )
        self.out.say(
            f"member web-2 ERROR, pool and load balancer DEGRADED after "
            f"{time.monotonic() - t0:.1f} s (HAProxy's checks: {self.check_options}; "
            "then a heartbeat at once)"
        )
        self.show_tree()
        for line in self.children["haproxy"].log.read_text(errors="replace").splitlines():
            found = HAPROXY_DOWN.search(line)
            if found:
                server, reason, info = found.groups()
                self.out.say(f"haproxy log: server {server[:8]}… is DOWN, {reason} ({info})")
        answers = show_traffic(self.out, self.seed.listener_port, 4)
        if set(answers) != {"web-1"}:
            raise DemoFailed(f"expected traffic only to web-1, got {answers}")

    # 7
    def step_kill_amphora(self) -> None:
        self.out.step(7, "Kill the amphora (HAProxy and its agent)")
        for name in ("agent", "haproxy"):
            child = self.children[name]
            self.procs.stop(child, signal.SIGKILL)
            self.out.say(f"kill -KILL {child.proc.pid}   ({name})")
        t0 = time.monotonic()
        self.out.say(f"waiting for heartbeat_timeout ({HEARTBEAT_TIMEOUT:g} s) ...")
        found = self.wait(
            lambda: read_failover(self.engine, self.seed),  # type: ignore[arg-type]
            HEARTBEAT_TIMEOUT + 15,
            "no failover_request for the amphora handed off by the driver",
            ("manager",),
        )
        request, (health, amphora_status) = found
        self.out.say(f"failover requested {time.monotonic() - t0:.1f} s after the kill")
        self.out.say(
            "failover_request:\n"
            f"  id            {request.id}\n"
            f"  amphora_id    {request.amphora_id}\n"
            f"  load_balancer {request.load_balancer_id}\n"
            f"  reason        {request.reason}\n"
            f"  requested_by  {request.requested_by}\n"
            f"  state         {request.state}   (for the API's worker: record driver)\n"
            f"amphora_health: busy = {bool(health.busy)}, last heartbeat "
            f"{(request.requested_at - health.last_update).total_seconds():.1f} s before "
            f"the request\n"
            f"amphora.status: {amphora_status}"
        )
        if not health.busy or request.state != C.FAILOVER_PENDING:
            raise DemoFailed(
                f"expected busy amphora and a PENDING request, got busy={health.busy} "
                f"state={request.state}"
            )
        for name in ("failing over amphora", "failover requested"):
            event = self.manager_logged(name)
            if event:
                self.out.say("manager log: " + show_event(event))

    # 8
    def step_shutdown(self) -> None:
        self.out.step(8, "Clean shutdown")
        manager = self.children["manager"]
        status = self.procs.stop(manager, signal.SIGTERM, timeout=15)
        self.out.say(f"kill -TERM {manager.proc.pid}   (manager) -> exit status {status}")
        if status != 0:
            raise DemoFailed(f"the manager exited with status {status} on SIGTERM")
        self.procs.stop(self.children["web-1"])
        self.out.say("web-1 stopped")

    # polling with liveness checks
    def wait(
        self, check: Callable[[], T | None], timeout: float, what: str, alive: Sequence[str]
    ) -> T:
        def probe() -> T | None:
            self.alive(*alive)
            return check()

        return poll(probe, timeout, what)

    def wait_tree(
        self, ok: Callable[[Tree], bool], timeout: float, what: str, alive: Sequence[str]
    ) -> Tree:
        """Poll `healthmgr status show -f json` until ``ok``; show the last tree on failure."""

        def check() -> Tree | None:
            tree = read_tree(self.workdir)
            return tree if ok(tree) else None

        try:
            return self.wait(check, timeout, f"not {what}", alive)
        except DemoFailed:
            with contextlib.suppress(DemoFailed):
                self.out.say("last status tree read:\n" + status_show(self.workdir))
            raise

    def show_tree(self) -> None:
        self.out.say("$ healthmgr status show lb1 --config healthmgr.toml")
        self.out.say(status_show(self.workdir).rstrip("\n"))


# --- entry point ----------------------------------------------------------------------------


def find_haproxy(given: str | None) -> str:
    candidates = [given] if given else [shutil.which("haproxy"), "/usr/sbin/haproxy"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    if given:
        raise DemoFailed(f"--haproxy: {given} is not an executable file")
    raise DemoFailed("haproxy is not installed (run: sudo apt-get install haproxy)")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the demo through ``finally``, stopping every child.
    Installed for SIGINT too: Ctrl-C works even when started in the background, where
    SIGINT arrives ignored."""

    def handler(signum: int, _frame: object) -> None:
        RECEIVED.append(signal.Signals(signum).name)
        check_interrupted()

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Cleanup runs to its end: a second Ctrl-C must not leave children behind."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo", description="The seed scenario with real HAProxy, manager and agent."
    )
    parser.add_argument("--haproxy", metavar="PATH", help="HAProxy binary (default: from PATH)")
    parser.add_argument(
        "--keep-dir",
        action="store_true",
        help="keep the work directory (database, configs, logs) instead of removing it",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Out()
    print(
        "healthmgr demo: the seed scenario on SQLite, real HAProxy, manager and agent", flush=True
    )
    try:
        haproxy_bin = find_haproxy(args.haproxy)
    except DemoFailed as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="healthmgr-demo-"))
    demo = Demo(out, workdir, haproxy_bin)
    status, keep = 1, True  # a failed run keeps its logs
    try:
        with signals_interrupt():
            try:
                demo.run()
            finally:
                with signals_ignored():
                    demo.close()
        status, keep = 0, args.keep_dir
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
    except (KeyboardInterrupt, Interrupted):  # KeyboardInterrupt: before the handlers
        print("\ndemo interrupted; every process it started is stopped", file=sys.stderr)
        status, keep = 130, args.keep_dir
    except Exception as exc:  # a bug or an unforeseen error: still one line, details in a file
        (workdir / "demo-traceback.txt").write_text(traceback.format_exc())
        reason = (str(exc).splitlines() or [""])[0]
        print(f"\ndemo FAILED: {type(exc).__name__}: {reason}", file=sys.stderr)
    finish(out, workdir, status=status, keep=keep)
    return status


def finish(out: Out, workdir: Path, *, status: int, keep: bool) -> None:
    stream = sys.stdout if status == 0 else sys.stderr
    if keep:
        note = "" if status in (0, 130) else " for inspection (logs: *.log)"
        print(f"work directory kept{note}: {workdir}", file=stream, flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"         work directory {workdir} removed", file=stream, flush=True)
    if status == 0:
        print(f"\ndemo OK in {out.elapsed():.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

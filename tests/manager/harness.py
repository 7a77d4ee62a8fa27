"""Run the real ``healthmgr serve`` as a subprocess and talk to it over UDP.

Used by the daemon integration tests and the throughput benchmark. The
daemon logs JSON lines on stderr (not a terminal); the harness collects them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthmgr.chaos.deployment import free_port, write_toml
from healthmgr.wire.ids import Id
from healthmgr.wire.keys import MasterKey, derive_amphora_key
from healthmgr.wire.native import encode_native
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
)
from tests.patience import EVENTUALLY_S, START_S, wait_until

MASTER = MasterKey(1, b"test master key, long enough")
MASTER_2 = MasterKey(2, b"rotated master key, long enough")


def write_config(
    path: Path,
    db_url: str,
    *,
    masters: Iterable[MasterKey] = (MASTER,),
    active_key_id: int = 1,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A config for a test daemon: fast intervals, a free port, metrics on."""
    base: dict[str, dict[str, Any]] = {
        "health_manager": {
            "bind_ip": "127.0.0.1",
            "bind_port": free_port(),
            "heartbeat_interval": 1.0,
            "heartbeat_timeout": 3.0,
            "health_check_interval": 0.3,
            "flush_interval": 0.05,
        },
        "database": {"connection": db_url},
        "metrics": {"bind": f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"},
        "logging": {"level": "INFO", "format": "json", "rejected_log_interval": 0.5},
        "failover": {"driver": "record"},
    }
    for name, values in (sections or {}).items():
        base.setdefault(name, {}).update(values)
    return write_toml(path, base, masters, active_key_id)


def read_config(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[str]
    config: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    _sock: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        hm = self.config["health_manager"]
        return hm["bind_ip"], hm["bind_port"]

    def __post_init__(self) -> None:
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)

    def send(self, *datagrams: bytes) -> None:
        assert self._sock is not None
        for d in datagrams:
            self._sock.sendto(d, self.address)

    @property
    def manager_id(self) -> str | None:
        return self.config["health_manager"].get("manager_id")

    def log_time(self, event: str, **match: Any) -> float:
        """When the daemon logged ``event`` (POSIX seconds, from its JSON timestamp)."""
        return parse_log_time(self.wait_for_log(event, **match)["timestamp"])

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_for_log(
        self, event: str, timeout: float = EVENTUALLY_S, **match: Any
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = "\n".join(self.lines[-30:])
        raise AssertionError(f"no log event {event!r} {match}; log:\n{tail}")

    def wait_serving(self) -> dict[str, Any]:
        """Until the daemon logs that it serves (its start-up: a wait, not a speed bound)."""
        return self.wait_for_log("healthmgr serving", timeout=START_S)

    def count(self, event: str) -> int:
        """How many times the daemon has logged ``event`` so far."""
        return sum(1 for e in self.events() if e.get("event") == event)

    def wait_judging(self, after: int = 0, timeout: float = EVENTUALLY_S) -> None:
        """Until the health check judges for the ``after + 1``-th time: past its start-up
        grace (a full heartbeat_timeout of health since the start), or with ``after`` =
        ``count(JUDGING)`` taken before a fault, past the grace after it. A wait on the
        daemon's word, not a sleep."""
        self.until(lambda: self.count(JUDGING) > after, what="judging", timeout=timeout)

    def until(self, predicate: Callable[[], Any], what: str, timeout: float = EVENTUALLY_S) -> Any:
        """``wait_until`` that gives up at once if the daemon exits, with its log tail."""

        def check() -> Any:
            if self.proc.poll() is not None:
                tail = "\n".join(self.lines[-15:])
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) while waiting for {what}:\n{tail}"
                )
            return predicate()

        try:
            return wait_until(check, timeout, what)
        except AssertionError as exc:
            if "daemon exited" in str(exc):
                raise
            tail = "\n".join(self.lines[-15:])
            raise AssertionError(f"{exc}; daemon log:\n{tail}") from None

    def metrics(self) -> str:
        url = f"http://{self.config['metrics']['bind']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample from /metrics (0.0 when absent)."""
        want = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        )
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if _normalise(key) == want:
                return float(value)
        return 0.0

    def kill(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self._sock is not None:
                self._sock.close()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (``writer = "process"``: the writer, and
    multiprocessing's resource tracker)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            found |= kids
            todo.extend(kids)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; its reaper may be slow


def _normalise(key: str) -> str:
    if "{" not in key:
        return key
    name, _, rest = key.partition("{")
    labels = sorted(p for p in rest.rstrip("}").split(",") if p)
    return name + "{" + ",".join(labels) + "}"


PORT_ATTEMPTS = 3
JUDGING = "health check judging again"  # the checker's log line when a grace ends


def start_daemon(
    config_path: Path, *, env: dict[str, str] | None = None, wait: bool = True
) -> RunningDaemon:
    """Start ``healthmgr serve``; with ``wait``, until it serves.

    ``free_port`` can race with another process taking the port before the
    daemon binds it (tests run beside other suites): a daemon that exits with
    "Address already in use" is started again on fresh ports.
    """
    for attempt in range(PORT_ATTEMPTS):
        daemon = _spawn(config_path, env)
        if not wait:
            return daemon
        try:
            daemon.wait_serving()
            return daemon
        except AssertionError:
            in_use = daemon.proc.poll() is not None and any(
                "Address already in use" in line for line in daemon.lines
            )
            if not in_use or attempt == PORT_ATTEMPTS - 1:
                daemon.stop(signal.SIGKILL)  # nobody else holds it: it must not outlive the test
                raise
            _fresh_ports(config_path)
    raise AssertionError("unreachable")


def _spawn(config_path: Path, env: dict[str, str] | None) -> RunningDaemon:
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthmgr", "serve", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    daemon = RunningDaemon(proc, read_config(config_path))
    threading.Thread(target=_collect, args=(proc, daemon.lines), daemon=True).start()
    return daemon


def _fresh_ports(config_path: Path) -> None:
    """Rewrite the config's UDP port and metrics port (only the lines that hold them)."""
    lines = []
    for line in config_path.read_text().splitlines():
        if line.startswith("bind_port = "):
            line = f"bind_port = {free_port()}"
        elif line.startswith("bind = ") and "127.0.0.1:" in line:
            line = f'bind = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"'
        lines.append(line)
    config_path.write_text("\n".join(lines) + "\n")


def _collect(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))


@dataclass
class Agent:
    """A fake amphora sending native heartbeats for a seeded load balancer."""

    amphora: Id
    listener: Id
    pool: Id
    members: tuple[Id, ...]
    master: MasterKey = MASTER
    seq: int = 0
    epoch: int = 1
    interval_ms: int = 1000  # what the heartbeats say; match the real sending period
    counters: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    # Defaults for heartbeats built without arguments (e.g. by a Beater).
    states: dict[Id, MemberState] = field(default_factory=dict)
    step: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def key(self) -> bytes:
        return derive_amphora_key(self.master, self.amphora)

    def heartbeat(
        self,
        *,
        members: dict[Id, MemberState] | None = None,
        pool: PoolState = PoolState.UP,
        listener: ListenerState = ListenerState.OPEN,
        listeners: bool = True,
        seq: int | None = None,
        sent_at_ms: int | None = None,
        add: tuple[int, int, int, int] | None = None,
    ) -> Heartbeat:
        if seq is None:
            self.seq += 1
            seq = self.seq
        add = self.step if add is None else add
        self.counters = [c + a for c, a in zip(self.counters, add, strict=True)]
        states = self.states if members is None else members
        member_reports = tuple(MemberReport(m, states.get(m, MemberState.UP)) for m in self.members)
        bytes_in, bytes_out, total, errors = self.counters
        return Heartbeat(
            amphora_id=self.amphora,
            seq=seq,
            sent_at_ms=sent_at_ms if sent_at_ms is not None else int(time.time() * 1000),
            interval_ms=self.interval_ms,
            counters_epoch=self.epoch,
            listeners=(
                (ListenerReport(self.listener, listener, 3, bytes_in, bytes_out, total, errors),)
                if listeners
                else ()
            ),
            pools=(
                (PoolReport(self.pool, self.listener, pool, member_reports),) if listeners else ()
            ),
        )

    def datagram(self, **kw: Any) -> bytes:
        return encode_native(self.heartbeat(**kw), self.master.id, self.key)


def parse_log_time(text: str) -> float:
    """A structlog ISO timestamp (UTC) as POSIX seconds."""
    import datetime as dt

    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def run_serve(
    config_path: Path, *, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``healthmgr serve`` expected to exit by itself (startup errors)."""
    return subprocess.run(
        [sys.executable, "-m", "healthmgr", "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


class Beater:
    """Keeps fake amphorae alive: a thread sending each agent's heartbeat every ``interval``.

    Datagrams go to the daemons in turn (as an agent with several entries in
    ``controller_ip_port_list`` does). Use as a context manager; ``stop`` is idempotent.
    """

    def __init__(
        self, daemons: list[RunningDaemon], agents: list[Agent], interval: float = 0.3
    ) -> None:
        self.daemons = daemons
        self.agents = list(agents)
        self.interval = interval
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Beater:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def remove(self, agent: Agent) -> None:
        """This amphora dies: no more heartbeats from it."""
        with self._lock:
            self.agents = [a for a in self.agents if a is not agent]

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Change agents (states, counters, epoch) between two rounds, never during one."""
        with self._lock:
            yield

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            with self._lock:  # built under the lock: see changing()
                round_ = []
                for agent in self.agents:
                    round_.append((self.daemons[turn % len(self.daemons)], agent.datagram()))
                    turn += 1
            for daemon, datagram in round_:
                if daemon.proc.poll() is None:
                    daemon.send(datagram)
                    self.sent += 1
            self._stop.wait(self.interval)

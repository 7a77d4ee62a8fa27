"""The managers and the database a scenario runs against: started here, or given.

A :class:`Deployment` is what every scenario sees: the managers' UDP
addresses (and, where known, their metrics endpoint, process id and the relay
in front of their database connection), the database URL, the master key that
signs the simulated fleet's heartbeats, and the timings the verdicts use.

- :func:`start_deployment` starts ``healthmgr serve`` processes itself, on
  a database it migrates (a SQLite file in the work directory by default, or
  a PostgreSQL/MariaDB URL), each manager's database connection through a TCP
  relay of its own on a server database, so that a scenario can cut it; it
  can signal and restart them.
- :func:`external_deployment` describes managers started by someone else:
  their addresses, a healthmgr configuration holding the keys and timings
  (and the database URL, unless given), and optionally their metrics URLs,
  pids and the control sockets of relays in front of their databases.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
import tomli_w
from sqlalchemy.engine import make_url

from healthmgr.config import Settings, load_settings
from healthmgr.wire.keys import MasterKey

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL = 2000  # lines of each started manager's log kept in memory


class DeploymentError(Exception):
    """The deployment cannot be started or used as asked (one line for the operator)."""


class RelayLike(Protocol):
    """The controls of a TCP relay (healthmgr.chaos.relay: Relay, RelayProcess, RelayControls)."""

    def passthrough(self) -> dict[str, Any]: ...
    def blackhole(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Timing:
    """The managers' options that the verdicts depend on (seconds)."""

    heartbeat_interval: float
    heartbeat_timeout: float
    health_check_interval: float
    failover_settle: float
    flush_interval: float
    failover_threshold: int | str = "10%"
    observer_timeout: float = 300.0
    observer_fresh: float = 3.0  # a manager whose liveness row is older is not live
    loop_lag_after: float = 0.5  # a manager's check may be this late and it not impaired

    @classmethod
    def from_settings(cls, settings: Settings) -> Timing:
        from healthmgr.manager.service import loop_lag_after, presence_interval

        hm = settings.health_manager
        settle = hm.failover_settle
        return cls(
            hm.heartbeat_interval,
            hm.heartbeat_timeout,
            hm.health_check_interval,
            2 * hm.heartbeat_interval if settle is None else settle,
            hm.flush_interval,
            hm.failover_threshold,
            hm.observer_timeout,
            3 * presence_interval(settings),
            loop_lag_after(settings),
        )  # as healthmgr/manager/service.py

    @property
    def check_slack(self) -> float:
        """How long after it is due a verdict may come: the check's period, and the loop
        lag below which a manager is not impaired (a scheduler's delay on a loaded host
        goes unnoticed up to it)."""
        return self.health_check_interval + self.loop_lag_after

    @property
    def failover_bound(self) -> float:
        """How long after its last heartbeat a dead amphora must have been failed over."""
        return self.heartbeat_timeout + self.failover_settle + self.check_slack


@dataclass
class Manager:
    """One manager as the scenarios reach it."""

    address: tuple[str, int]
    metrics_url: str | None = None
    pid: int | None = None
    manager_id: str | None = None
    db_relay: RelayLike | None = None
    # Started by this tool: how to (re)start it, its process and log.
    argv: list[str] | None = None
    process: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))
    _serving: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        host, port = self.address
        return self.manager_id or f"{host}:{port}"

    @property
    def started_here(self) -> bool:
        return self.argv is not None

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.pid is not None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return not _zombie(self.pid)  # dead, not yet reaped by its parent
        return True

    # -- metrics --------------------------------------------------------------------

    def metrics(self) -> dict[str, float] | None:
        """Every sample of /metrics (``name{labels}`` sorted) or None when unreachable."""
        if self.metrics_url is None:
            return None
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return parse_metrics(text)

    def rss_bytes(self) -> int | None:
        """Resident memory: from /proc when the process is on this host, else the metric."""
        if self.pid is not None:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        samples = self.metrics()
        if samples and "process_resident_memory_bytes" in samples:
            return int(samples["process_resident_memory_bytes"])
        return None

    # -- the process ----------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        if self.pid is None:
            raise DeploymentError(f"manager {self.name}: no process id to signal (give --pid)")
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """The exit status of a manager started here, None if it is not ours or still runs."""
        if self.process is None:
            deadline = time.monotonic() + timeout
            while self.running and time.monotonic() < deadline:
                time.sleep(0.05)
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def start(self) -> None:
        self.spawn()
        self.wait_serving()

    def spawn(self) -> None:
        """Start the process (:meth:`wait_serving` waits until it serves)."""
        if self.argv is None:
            raise DeploymentError(f"manager {self.name} was not started by healthmgr-chaos")
        self._serving.clear()
        assert self.log_path is not None
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.process.pid
        threading.Thread(target=self._collect, args=(self.process,), daemon=True).start()

    def wait_serving(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._serving.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(list(self.lines)[-10:])
                raise DeploymentError(f"manager {self.name} did not start:\n{tail}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        code = self.wait_exit()
        if code is None:
            self.process.kill()
            code = self.process.wait()
        return code

    def _collect(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None and self.log_path is not None
        with self.log_path.open("a") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                self.lines.append(line.rstrip("\n"))
                if '"healthmgr serving"' in line:
                    self._serving.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log events of a manager started here (JSON lines) named ``name``."""
        out = []
        for line in list(self.lines):
            if name not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out


@dataclass
class Deployment:
    """What the scenarios run against."""

    db_url: str
    master: MasterKey
    timing: Timing
    managers: list[Manager]
    started_here: bool = False
    work_dir: Path | None = None
    _engine: sa.Engine | None = None
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return make_url(self.db_url).get_backend_name()

    @property
    def server_db(self) -> bool:
        return self.dialect in ("postgresql", "mysql", "mariadb")

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            from healthmgr.db.engine import make_engine

            self._engine = make_engine(self.db_url)
        return self._engine

    def close(self) -> None:
        for manager in self.managers:
            if manager.started_here:
                manager.stop()
        for step in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                step()
        if self._engine is not None:
            self._engine.dispose()


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        # "pid (comm) S ...": the state follows the last ")" (comm may hold any)
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    return False


# -- started here -------------------------------------------------------------------------

FAST = {
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 3.0,
    "health_check_interval": 0.2,
    "flush_interval": 0.05,
}


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_toml(
    path: Path,
    sections: dict[str, dict[str, Any]],
    masters: Iterable[MasterKey],
    active_key_id: int | None = None,
) -> Path:
    """A manager's config file, owner-only (it holds the master secrets)."""
    masters = list(masters)
    keys = {
        "active_key_id": masters[0].id if active_key_id is None else active_key_id,
        "master": [{"id": m.id, "secret": m.secret.decode()} for m in masters],
    }
    path.write_text(tomli_w.dumps({**sections, "keys": keys}))
    path.chmod(0o600)
    return path


def planned_deployment(managers: int, db_url: str | None) -> Deployment:
    """What :func:`start_deployment` would start, not started: enough to tell whether a
    scenario can run against it before anything is started."""
    url = db_url or "sqlite:///healthmgr.db"
    server = make_url(url).get_backend_name() != "sqlite"
    planned = [
        Manager(("127.0.0.1", 0), pid=0, argv=[], db_relay=_NoRelay() if server else None)
        for _ in range(managers)
    ]
    return Deployment(url, MasterKey(1, b"-" * 32), Timing(1, 2, 1, 1, 1), planned, True)


class _NoRelay:
    """The relay a planned manager will have (never used)."""

    def passthrough(self) -> dict[str, Any]:
        raise DeploymentError("a planned deployment has no relay yet")

    blackhole = passthrough


def start_deployment(
    work_dir: Path,
    *,
    managers: int = 1,
    db_url: str | None = None,
    options: dict[str, Any] | None = None,
) -> Deployment:
    """Migrate the database and start ``managers`` ``healthmgr serve`` processes."""
    from healthmgr.chaos.relay import Relay
    from healthmgr.db.migrate import upgrade

    work_dir.mkdir(parents=True, exist_ok=True)
    url = db_url or f"sqlite:///{work_dir / 'healthmgr.db'}"
    server = make_url(url).get_backend_name() != "sqlite"
    if managers > 1 and not server:
        raise DeploymentError(
            f"{managers} managers need a PostgreSQL or MariaDB database (--db-url): "
            "SQLite is for one manager"
        )
    upgrade(url)
    master = MasterKey(1, secrets.token_hex(24).encode())
    hm = {**FAST, **(options or {})}
    deployment = Deployment(url, master, Timing(1, 2, 1, 1, 1), [], True, work_dir)
    try:
        for index in range(managers):
            manager_url, relay = url, None
            if server:
                u = make_url(url)
                relay = Relay((u.host or "127.0.0.1", u.port or _default_port(u)))
                relay.start()
                deployment._cleanup.append(relay.close)
                manager_url = u.set(host="127.0.0.1", port=relay.port).render_as_string(
                    hide_password=False
                )
            manager = _manager_config(work_dir, index, manager_url, hm, master)
            manager.db_relay = relay
            deployment.managers.append(manager)
            manager.spawn()  # all at once: each takes a second or so to start
        for manager in deployment.managers:
            manager.wait_serving()
        settings = load_settings(str(work_dir / "manager-0.toml"), env={})
        deployment.timing = Timing.from_settings(settings)
    except BaseException:
        deployment.close()
        raise
    return deployment


def _default_port(u: sa.engine.URL) -> int:
    return 5432 if u.get_backend_name() == "postgresql" else 3306


def _manager_config(
    work_dir: Path, index: int, url: str, hm: dict[str, Any], master: MasterKey
) -> Manager:
    port, metrics_port = free_port(), free_port(socket.SOCK_STREAM)
    manager_id = f"chaos-{index}"
    connection = url
    if connection.startswith("sqlite"):
        connection += "?timeout=1"  # a locked database fails a flush fast (an outage)
    sections = {
        "health_manager": {
            "bind_ip": "127.0.0.1",
            "bind_port": port,
            "manager_id": manager_id,
            "sock_rlimit": 4 << 20,
            **hm,
        },
        "database": {"connection": connection, "timeout": 1.0},
        "metrics": {"bind": f"127.0.0.1:{metrics_port}"},
        "logging": {"level": "INFO", "format": "json"},
        "failover": {"driver": "record"},
    }
    path = write_toml(work_dir / f"manager-{index}.toml", sections, [master])
    return Manager(
        ("127.0.0.1", port),
        f"http://127.0.0.1:{metrics_port}/metrics",
        None,
        manager_id,
        argv=[sys.executable, "-m", "healthmgr", "serve", "--config", str(path)],
        log_path=work_dir / f"manager-{index}.log",
    )


# -- given -------------------------------------------------------------------------------


def external_deployment(
    config: str | None,
    addresses: Sequence[tuple[str, int]],
    *,
    db_url: str | None = None,
    metrics: Sequence[str] = (),
    pids: Sequence[int] = (),
    db_relays: Sequence[str] = (),
) -> Deployment:
    """Managers someone else started; ``config`` holds the keys and timings they use."""
    from healthmgr.chaos.relay import RelayControl, _Controls

    settings = load_settings(config)
    master = settings.keys.active_key
    if master is None:
        raise DeploymentError("the configuration has no [keys] master key to sign heartbeats")
    addresses = list(addresses) or (
        [(settings.health_manager.bind_ip, settings.health_manager.bind_port)]
    )
    for name, given in (("--metrics", metrics), ("--pid", pids), ("--db-relay", db_relays)):
        if len(given) > len(addresses):
            raise DeploymentError(f"{name} given {len(given)} times for {len(addresses)} managers")

    class _Control(_Controls):
        def __init__(self, path: str) -> None:
            self.control = RelayControl(path)
            self.address = ("", 0)

        def command(self, text: str) -> dict[str, Any]:
            from healthmgr.chaos.relay import _checked

            return _checked(self.control.send(text))

    managers = [
        Manager(
            address,
            metrics[i] if i < len(metrics) else None,
            pids[i] if i < len(pids) else None,
            None,
            _Control(db_relays[i]) if i < len(db_relays) else None,
        )
        for i, address in enumerate(addresses)
    ]
    return Deployment(
        db_url or settings.database.connection, master, Timing.from_settings(settings), managers
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{"name{a="1",b="2"}": value}`` with labels sorted."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + ("{" + labels + "}" if labels else "")] = float(s.value)
    return out


def metric_sum(samples: dict[str, float] | None, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    if not samples:
        return 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(w in rest for w in want):
            total += value
    return total

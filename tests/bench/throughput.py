"""Throughput of one real ``healthmgr serve`` process, as JSON.

For each database and heartbeat shape: a fresh database holding N simulated
amphorae (the fleet simulator's topology), a real daemon, and a separate
sender process (``python -m healthmgr.chaos.fleet``) blasting pre-signed heartbeats at
rising rates. A rate passes when every datagram sent was accepted (the
daemon's ``healthmgr_heartbeats_total{result="accepted"}``), the kernel
dropped none (``/proc/net/snmp`` Udp RcvbufErrors), and the database reflects
the last heartbeat of every amphora (``listener_statistics.last_seq``).
Also reported: p99 arrival-to-commit time (the daemon's commit-lag
histogram), resident memory per tracked amphora, and per step the CPU per
heartbeat of the daemon, of the sender's blast (it signs beforehand) and of
the database server (PostgreSQL: its processes except other databases'
backends; MariaDB: the whole server), with the two bounds they give:
``daemon_bound_per_s`` (one manager process on a core of its own) and
``cpu_bound_per_s`` (every core busy with the three).

    .venv/bin/python tests/bench/throughput.py [--databases sqlite,postgresql]
        [--amphorae 20000] [--rates 5000,10000,20000,30000,40000,50000]
        [--large-amphorae 1000] [--large-rates 1000,2000,3000,5000]
        [--duration 4] [--memory-amphorae 100000]
        [--health-update-resolution 0] [--stats-update-every 1] [--flush-interval 0.25]
        [--processes 1] [--limit-heartbeats 10000] [--compare [REF] [--compare-rounds 2]]

``limits``: the physical limit in the same run, per database: the store
alone flushing batches of N seed heartbeats (tests/bench/db.py), rows/s and
heartbeats/s, and rows/s inside the statements (driver and database only).

``--compare REF`` (default HEAD~1) runs the same command from REF and from
the working tree alternately in this invocation and prints the ratio of each
figure (tests/bench/compare.py).

Needs the services of the test suite (tests/conftest.py makes the databases).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from healthmgr.chaos.fleet import Topology  # noqa: E402
from healthmgr.chaos.topology import insert_topology  # noqa: E402
from healthmgr.db.engine import make_engine  # noqa: E402
from healthmgr.db.migrate import upgrade  # noqa: E402
from tests.bench.compare import compare_from_script  # noqa: E402
from tests.bench.db import bench_database  # noqa: E402
from tests.conftest import fresh_database_url  # noqa: E402
from tests.manager.harness import (  # noqa: E402
    MASTER,
    RunningDaemon,
    free_port,
    start_daemon,
    write_config,
)

RCVBUF = 32 << 20
WARM_RATE = 20000  # first contact of every amphora: datagrams wait while topologies load
TRACED_WARM_RATE = 2500
# The warm-up waits until each heartbeat was applied: one that waited for its
# topology longer than an interval (a loaded machine) is "late", not
# "accepted", and waiting for it to be accepted would wait out the timeout.
WARM_RESULTS = ("accepted", "late", "unhealthy")
SOURCES = 64  # sender sockets: amphorae keep theirs, spread over SO_REUSEPORT processes
# A rate passes only while the writer keeps up: p99 arrival-to-commit (the
# upper bound of its histogram bucket) within this many seconds, or four
# flush intervals when those are longer.
MAX_P99_COMMIT_LAG = 1.0
CPUS = os.cpu_count() or 1


def udp_rcvbuf_errors() -> int:
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Udp:")
    ]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (less moved by other load than rates are)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Every process below ``pid``, alive now."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found += [child, *children(child)]
    return found


def _processes(*names: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
    return pids


class ServerCpu:
    """CPU seconds of the database server working for this bench, per process.

    PostgreSQL: every server process except the backends of other databases
    (the WAL writer, checkpointer and autovacuum count: they work for the
    bench's writes too). MariaDB runs one process for every client, so its
    figure includes other load on the machine. SQLite: none (it is the daemon).
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def sample(self) -> dict[int, float]:
        name = self.engine.dialect.name
        if name == "postgresql":
            with self.engine.connect() as conn:
                others = {
                    pid
                    for pid, db in conn.exec_driver_sql("SELECT pid, datname FROM pg_stat_activity")
                    if db is not None and db != self.engine.url.database
                }
            pids = [pid for pid in _processes("postgres") if pid not in others]
        elif name in ("mysql", "mariadb"):
            pids = _processes("mariadbd", "mysqld")
        else:
            return {}
        out = {}
        for pid in pids:
            with suppress(OSError):  # a backend that ended meanwhile
                out[pid] = cpu_seconds(pid)
        return out

    @staticmethod
    def since(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU spent between two samples (a process born meanwhile counts whole)."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def raise_rmem_max() -> int:
    path = Path("/proc/sys/net/core/rmem_max")
    with suppress(OSError):
        if int(path.read_text()) < RCVBUF:
            path.write_text(str(RCVBUF))
    return int(path.read_text())


def _ready(daemon: RunningDaemon) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with suppress(OSError):
            daemon.metrics()
            return
        time.sleep(0.2)
    raise RuntimeError("daemon did not start:\n" + "\n".join(daemon.lines[-20:]))


class Histogram:
    """A Prometheus histogram summed over the daemons' /metrics text."""

    def __init__(self, daemons: list[RunningDaemon], name: str) -> None:
        counts: dict[float, float] = {}
        for daemon in daemons:
            for line in daemon.metrics().splitlines():
                if line.startswith(f"{name}_bucket"):
                    le = float(line.split('le="')[1].split('"')[0])
                    counts[le] = counts.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
        self.buckets = sorted(counts.items())

    def quantile_since(self, before: Histogram, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile of what came since ``before``."""
        old = dict(before.buckets)
        deltas = [(le, n - old.get(le, 0.0)) for le, n in self.buckets]
        total = deltas[-1][1] if deltas else 0
        if total <= 0:
            return None
        for le, n in deltas:
            if n >= q * total:
                return le
        return None


class Bench:
    def __init__(
        self,
        dialect: str,
        topology: Topology,
        workdir: Path,
        duration: float,
        options: dict[str, Any] | None = None,
        processes: int = 1,
        env: dict[str, str] | None = None,
    ):
        self.processes = processes
        self.env = env
        self.options = options or {}
        self.stats_every = int(self.options.get("stats_update_every", 1))
        self.max_lag = max(MAX_P99_COMMIT_LAG, 4 * float(self.options.get("flush_interval", 0)))
        self.dialect = dialect
        self.topology = topology
        self.workdir = workdir
        self.duration = duration
        self.listeners = sum(len(a.listeners) for a in topology.amphorae)
        self.next_seq = self.stats_every  # the warm-up round is then written

    def __enter__(self) -> Bench:
        self.url, self._drop = fresh_database_url(self.dialect, self.workdir)
        upgrade(self.url)
        self.engine = make_engine(self.url)
        self.server = ServerCpu(self.engine)
        insert_topology(self.engine, self.topology)
        self.ids_file = self.workdir / f"ids-{self.dialect}.json"
        self.ids_file.write_text(json.dumps(self.topology.to_json()))
        self.key_file = self.workdir / "master.key"
        self.key_file.write_text(MASTER.secret.decode())
        port = free_port()
        self.daemons = [
            start_daemon(self._config(port, index), env=self.env, wait=False)
            for index in range(self.processes)
        ]
        self.daemon = self.daemons[0]
        for daemon in self.daemons:
            _ready(daemon)
        self.rss_idle = self.rss()
        return self

    def _config(self, port: int, index: int) -> Path:
        """One process's config: with several, they share the port (SO_REUSEPORT)."""
        return write_config(
            self.workdir / f"hm-{self.dialect}-{index}.toml",
            self.url,
            sections={
                "health_manager": {
                    "bind_port": port,
                    "reuse_port": self.processes > 1,
                    "manager_id": f"bench-{index}",
                    "heartbeat_interval": 10.0,
                    "heartbeat_timeout": 3600.0,
                    "health_check_interval": 10.0,
                    "flush_interval": 0.25,
                    "max_clock_skew": 60.0,
                    "sock_rlimit": RCVBUF,
                    **self.options,
                },
                "logging": {"level": "WARNING"},
            },
        )

    def __exit__(self, *exc: object) -> None:
        for daemon in self.daemons:
            daemon.stop()
        self.engine.dispose()
        self._drop()

    def send(self, rate: float, duration: float) -> dict[str, Any]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "healthmgr.chaos.fleet",
                "--rate",
                str(rate),
                "--duration",
                str(duration),
                "--manager",
                "{}:{}".format(*self.daemon.address),
                "--master-key-file",
                str(self.key_file),
                "--key-id",
                str(MASTER.id),
                "--ids-file",
                str(self.ids_file),
                "--start-seq",
                str(self.next_seq),
                "--sources",
                str(SOURCES),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        summary = json.loads(out.stdout)
        self.next_seq = summary["last_seq"] + 1
        return summary

    def accepted(self, results: tuple[str, ...] = ("accepted",)) -> float:
        return sum(
            d.metric("healthmgr_heartbeats_total", result=result)
            for d in self.daemons
            for result in results
        )

    def commit_lag(self) -> Histogram:
        return Histogram(self.daemons, "healthmgr_commit_lag_seconds")

    def pids(self) -> list[int]:
        """The daemons and their children (``writer = "process"``: the writer)."""
        return [pid for d in self.daemons for pid in (d.proc.pid, *children(d.proc.pid))]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def children_cpu(self) -> float:
        """The writer processes' share of ``cpu`` (0 with ``writer = "thread"``)."""
        return sum(cpu_seconds(pid) for d in self.daemons for pid in children(d.proc.pid))

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def reflected(self, last_seq: int) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT COUNT(*) FROM listener_statistics WHERE last_seq >= :s"),
                    # With stats_update_every k only seqs divisible by k are written.
                    {"s": last_seq - last_seq % self.stats_every},
                ).scalar()
                or 0
            )

    def settle(
        self,
        expected: float,
        last_seq: int,
        timeout: float = 20.0,
        results: tuple[str, ...] = ("accepted",),
    ) -> tuple[float, int]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                accepted, rows = self.accepted(results), self.reflected(last_seq)
            except OSError:  # a daemon too busy to answer /metrics (traced, loaded machine)
                if time.monotonic() > deadline:
                    raise
                continue
            if (accepted >= expected and rows >= self.listeners) or time.monotonic() > deadline:
                return accepted, rows
            time.sleep(0.25)

    def warm(self, timeout: float = 60, rate: float = WARM_RATE) -> None:
        """One round at a gentle rate: the daemon loads every topology."""
        n = len(self.topology.amphorae)
        before = self.accepted(WARM_RESULTS)
        summary = self.send(rate=min(rate, n), duration=1.0)
        self.settle(before + summary["sent"], summary["last_seq"], timeout, WARM_RESULTS)

    def step(self, rate: float) -> dict[str, Any]:
        before_accepted, before_drops = self.accepted(), udp_rcvbuf_errors()
        before_cpu, before_children = self.cpu(), self.children_cpu()
        before_server = self.server.sample()
        before_lag = self.commit_lag()
        summary = self.send(rate, self.duration)
        accepted, rows = self.settle(before_accepted + summary["sent"], summary["last_seq"])
        drops = udp_rcvbuf_errors() - before_drops
        lag = self.commit_lag()
        p99 = lag.quantile_since(before_lag, 0.99)
        n = max(1.0, accepted - before_accepted)
        cpu = {
            "daemon": self.cpu() - before_cpu,
            "writer_process": self.children_cpu() - before_children,
            # Its blast only: it signs every heartbeat before it starts sending.
            # (None from a fleet too old to say: no bound is computed then.)
            "sender": summary.get("blast_cpu_s"),
            "server": ServerCpu.since(before_server, self.server.sample()),
        }
        ok = (
            accepted - before_accepted == summary["sent"]
            and drops == 0
            and rows >= self.listeners
            # None: no health bump fell in this step (health_update_resolution)
            and (p99 is None or p99 <= self.max_lag)
        )
        per_heartbeat = {
            part: None if seconds is None else round(1e6 * seconds / n, 1)
            for part, seconds in cpu.items()
        }
        parts = [per_heartbeat[p] for p in ("daemon", "sender", "server")]
        total = None if None in parts else sum(parts)
        return {
            "rate_target": rate,
            "rate_sent": summary["rate_achieved"],
            "sent": summary["sent"],
            "accepted": int(accepted - before_accepted),
            "kernel_drops": drops,
            "db_rows_current": rows,
            "db_rows_expected": self.listeners,
            "p99_arrival_to_commit_s": p99,
            # The daemons' CPU per heartbeat over the step (receive path and writer).
            "daemon_cpu_us_per_heartbeat": per_heartbeat["daemon"],
            # Of which the writer processes' (``--writer process``).
            "writer_process_cpu_us_per_heartbeat": per_heartbeat["writer_process"],
            "sender_cpu_us_per_heartbeat": per_heartbeat["sender"],
            "db_server_cpu_us_per_heartbeat": per_heartbeat["server"],
            # The machine's bound: every core busy with the daemon, the sender and
            # the database server at this step's CPU per heartbeat.
            "cpu_bound_per_s": round(CPUS * 1e6 / total) if total else None,
            # One manager process's bound: a core of its own at this step's CPU.
            "daemon_bound_per_s": round(n / cpu["daemon"]) if cpu["daemon"] else None,
            "load_average": round(os.getloadavg()[0], 2),
            "passed": ok,
        }


def run_shape(
    dialect: str,
    amphorae: int,
    large: bool,
    rates: list[float],
    duration: float,
    options: dict[str, Any],
    processes: int = 1,
) -> dict[str, Any]:
    topology = Topology.generate(amphorae, large=large, seed=7)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Bench(dialect, topology, Path(tmp), duration, options, processes) as bench,
    ):
        bench.warm()
        rss = bench.rss()
        steps, best = [], None
        for rate in rates:
            result = bench.step(rate)
            steps.append(result)
            print(json.dumps({"dialect": dialect, "large": large, **result}), file=sys.stderr)
            if not result["passed"]:
                break
            best = rate
        return {
            "database": dialect,
            "shape": "large: 10 listeners x 10 members" if large else "seed: 1 listener, 2 members",
            "amphorae": amphorae,
            "options": options,
            "processes": processes,
            "highest_clean_rate_per_s": best,
            "rss_per_amphora_bytes": round((rss - bench.rss_idle) / amphorae),
            "steps": steps,
        }


def memory_only(amphorae: int, tracemalloc_top: int = 0) -> dict[str, Any]:
    """RSS per amphora once each was seen; with ``tracemalloc_top``, the
    daemon traced (tests/bench/tracemalloc_site) and its biggest live
    holders then, in bytes per amphora (tracing slows it and adds its own
    memory to the RSS: read the two figures from separate runs)."""
    topology = Topology.generate(amphorae, seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "daemon.tracemalloc"
        env = None
        if tracemalloc_top:
            site = str(Path(__file__).with_name("tracemalloc_site"))
            pythonpath = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
            env = {"PYTHONPATH": pythonpath, "HEALTHMGR_BENCH_TRACEMALLOC": str(snapshot)}
        with Bench("sqlite", topology, Path(tmp), 1, env=env) as bench:
            if tracemalloc_top:  # slowed by tracing: gently, or the kernel drops some
                bench.warm(timeout=600, rate=TRACED_WARM_RATE)
            else:
                bench.warm()
            rss = bench.rss()
            out: dict[str, Any] = {
                "amphorae": amphorae,
                "rss_idle_mb": round(bench.rss_idle / 2**20, 1),
                "rss_tracking_mb": round(rss / 2**20, 1),
                "bytes_per_amphora": round((rss - bench.rss_idle) / amphorae),
            }
            if tracemalloc_top:
                out["tracemalloc"] = _traced(bench, snapshot, amphorae, tracemalloc_top)
            return out


def _short(filename: str) -> str:
    return filename.rsplit("site-packages/", 1)[-1].replace(str(ROOT) + "/", "")


def _traced(bench: Bench, path: Path, amphorae: int, top: int) -> dict[str, Any]:
    import signal
    import tracemalloc

    bench.daemon.proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon wrote no tracemalloc snapshot")
        time.sleep(0.5)
    snap = tracemalloc.Snapshot.load(str(path)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    total = sum(s.size for s in snap.statistics("filename"))

    def rows(key: str, frames: int) -> list[dict[str, Any]]:
        out = []
        for stat in snap.statistics(key)[:top]:
            where = " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in stat.traceback[:frames])
            out.append({"where": where, "bytes_per_amphora": round(stat.size / amphorae, 1)})
        return out

    return {
        "live_bytes_per_amphora": round(total / amphorae),
        "by_line": rows("lineno", 1),
        "by_traceback": rows("traceback", 6),
    }


def limits(dialects: list[str], heartbeats: int) -> dict[str, Any]:
    """The store alone, per database: the physical limit the daemon is measured against."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in dialects:
            r = bench_database(dialect, heartbeats, 5, Path(tmp))
            out[dialect] = {
                "batch_rows": r["batch_rows"],
                "rows_per_s": r["rows_per_second"],
                "heartbeats_per_s": r["heartbeats_per_second"],
                "rows_per_s_in_statements": round(r["batch_rows"] / r["statement_seconds_median"]),
            }
    return out


def main() -> int:
    if compare_from_script(__file__, sys.argv[1:]):
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument("--amphorae", type=int, default=20000)
    p.add_argument("--rates", default="5000,10000,20000,30000,40000,50000,60000")
    p.add_argument("--large-amphorae", type=int, default=1000)
    p.add_argument("--large-rates", default="500,1000,2000,3000,4000,5000")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--memory-amphorae", type=int, default=100000)
    p.add_argument(
        "--memory-tracemalloc",
        type=int,
        default=0,
        metavar="TOP",
        help="trace the memory run's daemon; print its TOP biggest holders",
    )
    p.add_argument("--health-update-resolution", type=float, default=0.0)
    p.add_argument("--stats-update-every", type=int, default=1)
    p.add_argument("--flush-interval", type=float, default=0.25)
    p.add_argument("--writer", choices=("thread", "process"), default="thread")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="manager processes sharing the port with SO_REUSEPORT",
    )
    p.add_argument(
        "--limit-heartbeats",
        type=int,
        default=10000,
        help="store-alone flushes of this many heartbeats per database (0: off)",
    )
    p.add_argument(
        "--compare",
        nargs="?",
        const="HEAD~1",
        metavar="REF",
        help="run REF and the working tree alternately; print the ratios",
    )
    p.add_argument("--compare-rounds", type=int, default=2, help="runs per side")
    args = p.parse_args()
    options = {
        "health_update_resolution": args.health_update_resolution,
        "stats_update_every": args.stats_update_every,
        "flush_interval": args.flush_interval,
        "writer": args.writer,
    }
    rmem = raise_rmem_max()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "rmem_max": rmem},
        "runs": [],
    }
    dialects = [d for d in args.databases.split(",") if d]  # "": the memory figure only
    if args.limit_heartbeats and dialects:
        results["limits"] = limits(dialects, args.limit_heartbeats)
    for dialect in dialects:
        results["runs"].append(
            run_shape(
                dialect,
                args.amphorae,
                False,
                [float(r) for r in args.rates.split(",")],
                args.duration,
                options,
                args.processes,
            )
        )
        if args.large_amphorae:
            results["runs"].append(
                run_shape(
                    dialect,
                    args.large_amphorae,
                    True,
                    [float(r) for r in args.large_rates.split(",")],
                    args.duration,
                    options,
                    args.processes,
                )
            )
    if args.memory_amphorae:
        results["memory"] = memory_only(args.memory_amphorae, args.memory_tracemalloc)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Honest heartbeats through a flood, against a real ``healthmgr serve``, as JSON.

The scenario of issue 7 (case 2): a fleet of amphorae beating once a second
(``heartbeat_timeout`` 10 s) while one process floods the manager's port with
garbage and forged datagrams for 20 s. Three processes besides the daemon:

* the honest fleet, ``python -m healthmgr.chaos.fleet`` (each amphora once per second,
  pre-signed, spread over its own source sockets), run in three phases: a
  warm-up (every topology loaded, every amphora healthy), the flood, a tail;
* the flooder (this script with ``--flooder``): one tight ``sendto`` loop over
  pre-built datagrams, paced to ``--flood-rate`` (0: as fast as it can), the
  mix given by ``--mix``: ``garbage`` (random bytes), ``known`` (native header
  of a fleet amphora, random payload and tag: a forgery that passes every
  check before the HMAC), ``random`` (native header, random amphora id),
  ``octavia`` (starts with a zlib header byte, else random);
* the database the test fixtures make (SQLite by default: it takes no core of
  its own, and the two cores are the flooder's and the daemon's).

Printed per run: the flood rate achieved, honest heartbeats sent during the
flood and the share accepted (the daemon's ``healthmgr_heartbeats_total``
{result="accepted"} moved by those only: a forgery is never accepted), the
kernel's drops (``/proc/net/snmp`` RcvbufErrors, machine-wide, and the daemon's
``healthmgr_kernel_drops_total`` where it has one), the flood datagrams the
daemon read and rejected, the daemon's CPU seconds, and false failovers
(``failover_request`` rows: every amphora kept beating).

    .venv/bin/python tests/bench/flood.py [--amphorae 200] [--flood-rate 170000]
        [--flood-seconds 20] [--mix garbage=1,known=1,random=1] [--repeat 3]
        [--tree new=.] [--tree old=/path/to/old/checkout] [--rcvbuf BYTES]
        [--database sqlite] [--option name=value ...]

``--tree NAME=DIR`` runs the daemon from another checkout (``PYTHONPATH``),
e.g. an ``git archive`` of an older commit, so old and new are measured in one
run; with several trees the runs alternate (old, new, old, new, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import sqlalchemy as sa  # noqa: E402

from healthmgr.chaos.fleet import Topology  # noqa: E402
from healthmgr.db.engine import make_engine  # noqa: E402
from healthmgr.db.migrate import upgrade  # noqa: E402
from healthmgr.wire.envelope import MAGIC, VERSION  # noqa: E402
from tests.bench.throughput import insert_topology, rss_bytes, udp_rcvbuf_errors  # noqa: E402
from tests.conftest import fresh_database_url  # noqa: E402
from tests.manager.harness import (  # noqa: E402
    MASTER,
    RunningDaemon,
    start_daemon,
    write_config,
)

DATAGRAM_BYTES = 229  # a seed heartbeat's size: forgeries look like the real thing
POOL = 4096  # distinct flood datagrams, sent round-robin
WARM_SECONDS = 4.0
TAIL_SECONDS = 3.0
DRAIN_SECONDS = 3.0  # after the flood: let the daemon empty its socket
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- flooder


def flood_pool(mix: dict[str, float], fleet_ids: list[bytes], rng: random.Random) -> list[bytes]:
    """POOL datagrams in the proportions of ``mix``."""
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    out = []
    for kind in rng.choices(kinds, weights, k=POOL):
        body = rng.randbytes(DATAGRAM_BYTES)
        if kind == "garbage":
            first = rng.choice([b for b in range(256) if b not in (MAGIC[0], 0x78)])
            out.append(bytes([first]) + body[1:])
        elif kind == "known":
            head = MAGIC + bytes([VERSION]) + MASTER.id.to_bytes(2, "big") + rng.choice(fleet_ids)
            out.append(head + body[len(head) :])
        elif kind == "random":
            head = MAGIC + bytes([VERSION]) + MASTER.id.to_bytes(2, "big")
            out.append(head + body[len(head) :])
        elif kind == "octavia":
            out.append(b"\x78\xda" + body[2:])
        else:
            raise ValueError(f"unknown flood kind {kind!r}")
    return out


def flooder(args: argparse.Namespace) -> int:
    ids = [bytes.fromhex(i) for i in json.loads(Path(args.ids).read_text())]
    pool = flood_pool(parse_mix(args.mix), ids, random.Random(args.seed))
    host, port = args.target.rsplit(":", 1)
    address = (host, int(port))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(args.sources)]
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sendtos = [s.sendto for s in socks]
    n_socks, n_pool = len(sendtos), len(pool)
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    sent = errors = i = 0
    start = time.monotonic()
    end = start + args.seconds
    while True:
        for _ in range(64):
            try:
                sendtos[i % n_socks](pool[i % n_pool], address)
                sent += 1
            except OSError:
                errors += 1
            i += 1
        now = time.monotonic()
        if now >= end:
            break
        if interval:
            ahead = start + i * interval - now
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.monotonic() - start
    print(
        json.dumps(
            {
                "sent": sent,
                "errors": errors,
                "seconds": round(elapsed, 3),
                "rate_achieved": round(sent / elapsed),
            }
        )
    )
    return 0


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip()] = float(weight or 1)
    return mix


# ---------------------------------------------------------------- one run


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rejected(daemon: RunningDaemon) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in daemon.metrics().splitlines():
        if line.startswith("healthmgr_heartbeats_total{"):
            result = line.split('result="')[1].split('"')[0]
            if result != "accepted":
                out[result] = float(line.rsplit(" ", 1)[1])
    return out


class Run:
    def __init__(self, args: argparse.Namespace, tree: Path, workdir: Path) -> None:
        self.args = args
        self.tree = tree
        self.workdir = workdir
        self.topology = Topology.generate(args.amphorae, seed=5)
        self.ids_file = workdir / "ids.json"
        self.ids_file.write_text(json.dumps(self.topology.to_json()))
        self.fleet_ids = workdir / "fleet-ids.json"
        self.fleet_ids.write_text(json.dumps([a.id.hex() for a in self.topology.amphorae]))
        self.key_file = workdir / "master.key"
        self.key_file.write_text(MASTER.secret.decode())
        self.seq = 1

    def config(self, url: str) -> Path:
        hm: dict[str, Any] = {
            "heartbeat_interval": 1.0,
            "heartbeat_timeout": 10.0,
            "health_check_interval": 1.0,
            "flush_interval": 0.25,
            "manager_id": "flood",
        }
        if self.args.rcvbuf is not None:
            hm["sock_rlimit"] = self.args.rcvbuf
        for option in self.args.option:
            name, _, value = option.partition("=")
            hm[name] = json.loads(value)
        return write_config(
            self.workdir / "hm.toml",
            url,
            sections={
                "health_manager": hm,
                "logging": {"level": "INFO"},
            },
        )

    def honest(self, seconds: float, address: tuple[str, int]) -> subprocess.Popen[str]:
        n = self.args.amphorae
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "healthmgr.chaos.fleet",
                "--rate",
                str(n),
                "--duration",
                str(seconds),
                "--manager",
                "{}:{}".format(*address),
                "--master-key-file",
                str(self.key_file),
                "--key-id",
                str(MASTER.id),
                "--ids-file",
                str(self.ids_file),
                "--start-seq",
                str(self.seq),
                "--interval-ms",
                "1000",
                "--sources",
                str(n),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.seq += int(seconds) + 2
        return proc

    def flood(self, address: tuple[str, int]) -> subprocess.Popen[str]:
        a = self.args
        return subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--flooder",
                "--target",
                "{}:{}".format(*address),
                "--ids",
                str(self.fleet_ids),
                "--rate",
                str(a.flood_rate),
                "--seconds",
                str(a.flood_seconds),
                "--mix",
                a.mix,
                "--sources",
                str(a.flood_sources),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def __call__(self) -> dict[str, Any]:
        url, drop = fresh_database_url(self.args.database, self.workdir)
        engine = None
        daemon = None
        try:
            upgrade(url)
            engine = make_engine(url)
            insert_topology(engine, self.topology)
            # python -m puts the working directory first on sys.path: the tree's.
            cwd = os.getcwd()
            os.chdir(self.tree)
            try:
                daemon = start_daemon(
                    self.config(url), env={"PYTHONPATH": str(self.tree)}, wait=False
                )
            finally:
                os.chdir(cwd)
            daemon.wait_for_log("healthmgr serving")
            return self._measure(daemon, engine)
        finally:
            if daemon is not None:
                daemon.stop()
            if engine is not None:
                engine.dispose()
            drop()

    def _measure(self, daemon: RunningDaemon, engine: sa.Engine) -> dict[str, Any]:
        n = self.args.amphorae
        warm = self.honest(WARM_SECONDS, daemon.address)
        json.loads(warm.communicate()[0])
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="accepted") >= n,
            "warm-up accepted",
        )
        accepted0 = daemon.metric("healthmgr_heartbeats_total", result="accepted")
        rejected0 = rejected(daemon)
        drops0, kdrops0 = udp_rcvbuf_errors(), daemon.metric("healthmgr_kernel_drops_total")
        cpu0 = cpu_seconds(daemon.proc.pid)

        honest = self.honest(self.args.flood_seconds, daemon.address)
        flood = self.flood(daemon.address)
        flood_out = json.loads(flood.communicate()[0])
        honest_out = json.loads(honest.communicate()[0])
        time.sleep(DRAIN_SECONDS)

        accepted = daemon.metric("healthmgr_heartbeats_total", result="accepted") - accepted0
        after = rejected(daemon)
        read = {
            k: int(v - rejected0.get(k, 0)) for k, v in after.items() if v - rejected0.get(k, 0)
        }
        drops = udp_rcvbuf_errors() - drops0
        kdrops = daemon.metric("healthmgr_kernel_drops_total") - kdrops0
        cpu = cpu_seconds(daemon.proc.pid) - cpu0

        tail = self.honest(TAIL_SECONDS, daemon.address)
        tail.communicate()
        time.sleep(1.5)  # one more health check
        with engine.connect() as conn:
            failovers = int(
                conn.execute(sa.text("SELECT COUNT(*) FROM failover_request")).scalar() or 0
            )
            stopped = int(
                conn.execute(
                    sa.text("SELECT COUNT(*) FROM amphora WHERE status = 'FAILOVER_STOPPED'")
                ).scalar()
                or 0
            )
        return {
            "flood_rate_achieved": flood_out["rate_achieved"],
            "flood_sent": flood_out["sent"],
            "honest_sent": honest_out["sent"],
            "honest_accepted": int(accepted),
            "honest_accepted_pct": round(100 * accepted / honest_out["sent"], 1),
            "kernel_drops_rcvbuferrors": drops,
            "kernel_drops_socket": int(kdrops),
            "daemon_results_during_flood": read,
            "daemon_cpu_s": round(cpu, 1),
            # CPU per datagram read: steadier than the rates on a shared machine.
            "daemon_us_per_datagram": round(1e6 * cpu / max(1, sum(read.values()) + accepted), 2),
            "daemon_rss_mb": round(rss_bytes(daemon.proc.pid) / 2**20, 1),
            "false_failovers": failovers,
            "failover_stopped": stopped,
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flooder", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--ids", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=20, help=argparse.SUPPRESS)
    p.add_argument("--sources", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)

    p.add_argument("--amphorae", type=int, default=200)
    p.add_argument("--flood-rate", type=float, default=170_000, help="0: as fast as it can")
    p.add_argument("--flood-seconds", type=float, default=20.0)
    p.add_argument("--flood-sources", type=int, default=1, help="flooder source sockets")
    p.add_argument("--mix", default="garbage=1,known=1,random=1")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=DIR: run the daemon from this checkout (default new=.)",
    )
    p.add_argument(
        "--rcvbuf",
        type=int,
        default=None,
        help="sock_rlimit for the daemon (default: the daemon's own default)",
    )
    p.add_argument("--database", default="sqlite")
    p.add_argument(
        "--option", action="append", default=[], help="NAME=JSON: another [health_manager] option"
    )
    args = p.parse_args()
    if args.flooder:
        return flooder(args)

    trees = [t.split("=", 1) for t in args.tree] or [["new", str(ROOT)]]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for _ in range(args.repeat):
        for name, tree in trees:
            with tempfile.TemporaryDirectory() as tmp:
                result = Run(args, Path(tree).resolve(), Path(tmp))()
            result["load_avg_1m"] = os.getloadavg()[0]
            runs[name].append(result)
            print(json.dumps({"tree": name, **result}), file=sys.stderr)
    summary = {
        name: {
            "median_honest_accepted_pct": statistics.median(r["honest_accepted_pct"] for r in rs),
            "median_flood_rate": statistics.median(r["flood_rate_achieved"] for r in rs),
            "median_kernel_drops": statistics.median(r["kernel_drops_rcvbuferrors"] for r in rs),
            "false_failovers": [r["false_failovers"] for r in rs],
        }
        for name, rs in runs.items()
    }
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "rmem_max": int(Path("/proc/sys/net/core/rmem_max").read_text()),
                },
                "scenario": {
                    "amphorae": args.amphorae,
                    "flood_rate_target": args.flood_rate,
                    "flood_seconds": args.flood_seconds,
                    "mix": args.mix,
                    "flood_sources": args.flood_sources,
                    "rcvbuf": args.rcvbuf,
                    "database": args.database,
                    "options": args.option,
                },
                "summary": summary,
                "runs": runs,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

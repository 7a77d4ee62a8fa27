"""The manager's receive path alone (null store), its scaling and its memory, as JSON.

The real decoder, ingest and view of the daemon (built from ``Settings`` as
``Daemon`` builds them), no database: topologies come from the fleet
simulator's deterministic topology (the refresher's job, done between bursts
in batches of the refresher's size), and the writer's pending buffer is
dropped every ``FLUSH_EVERY`` heartbeats instead of being written.

    .venv/bin/python tests/bench/receive.py [--amphorae 1000,10000,100000,500000]
        [--steady 200000] [--udp-amphorae 10000] [--udp-rounds 20] [--no-udp]
    .venv/bin/python tests/bench/receive.py --trees old=/path/to/old,new=. --repeat 5
        [--amphorae 100000] [--no-udp]     # interleaved A/B: ratios new/old
    for k in 0 5; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python tests/bench/receive.py --loop 1000 $k 2>&1 | grep Collected; done

Per size, in a fresh subprocess (so each size's memory starts clean):

- ``first_contact_us``: per heartbeat of the first round (every amphora new:
  key derivation, topology installs, the start-up burst);
- ``steady_us``: per heartbeat of later rounds (same statuses, counters
  moving: the steady state of a fleet), median and best of the rounds;
- ``rss_per_amphora``: RSS after the first round (and after the steady
  rounds, and after ``malloc_trim``) minus RSS before any heartbeat, over N;
- ``live_bytes_per_amphora``: the long-lived structures themselves (a deep
  ``sys.getsizeof`` walk of the decoder's and the view's per-amphora maps),
  the memory floor the RSS figure compares with.

Physical limits measured in the same run: raw HMAC-SHA256 of one seed
datagram (``hmac.digest``), and, through a real UDP socket with a sender
process (on the other core) blasting pre-signed heartbeats as fast as it can,
the trio drain loop with a handler that does nothing against the same loop
with the daemon's ingest. Runs against whatever ``healthmgr`` is first on
``sys.path`` (``--trees`` sets ``PYTHONPATH`` per tree).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: --trees picks the tree under test

import structlog  # noqa: E402
import trio  # noqa: E402

from healthmgr.chaos.fleet import AmphoraTopo, Topology  # noqa: E402
from healthmgr.chaos.fleet import Fleet as SimFleet  # noqa: E402
from healthmgr.config import Settings  # noqa: E402
from healthmgr.manager.decoder import Decoder  # noqa: E402
from healthmgr.manager.fleet import Fleet  # noqa: E402
from healthmgr.manager.ingest import Ingest  # noqa: E402
from healthmgr.manager.metrics import Metrics  # noqa: E402
from healthmgr.manager.pending import Pending  # noqa: E402
from healthmgr.manager.receiver import Receiver  # noqa: E402
from healthmgr.manager.verdict_log import VerdictLog  # noqa: E402
from healthmgr.manager.view import View  # noqa: E402
from healthmgr.rules import constants as c  # noqa: E402
from healthmgr.rules.topology import (  # noqa: E402
    AmphoraTopology,
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
)
from healthmgr.wire import envelope  # noqa: E402
from healthmgr.wire.keys import MasterKey  # noqa: E402

MASTER = MasterKey(1, b"receive bench master secret 0123")
REFRESH_BATCH = 5000  # healthmgr.manager.refresher.BATCH
BURST = 2048  # healthmgr.manager.receiver.BURST: publish and refresh between bursts
FLUSH_EVERY = 15_000  # heartbeats per dropped pending (0.25 s at 60,000/s)
SO_RCVBUFFORCE = 33
LOOP_ROUNDS = 5  # --loop: steady rounds prepared (run 0 to 5 of them)


# ---------------------------------------------------------------- the daemon's parts


class Path_:
    """Decoder, view and ingest as ``Daemon`` builds them; the refresher's and
    the writer's turns are taken between bursts, with no database."""

    def __init__(self, topology: Topology) -> None:
        settings = Settings.model_validate(
            {
                "database": {"connection": "sqlite://"},
                "keys": {"master": [{"id": MASTER.id, "secret": MASTER.secret.decode()}]},
                "health_manager": {
                    "heartbeat_interval": 10.0,
                    "heartbeat_timeout": 3600.0,
                    "max_clock_skew": 3600.0,
                },
            }
        )
        hm = settings.health_manager
        self.fleet = Fleet()
        self.fleet.replace((a.id for a in topology.amphorae), ())
        self.decoder = Decoder.from_settings(settings, self.fleet)
        self.view = View(
            ttl=hm.topology_ttl,
            refresh_min_interval=60.0,
            late_after=hm.heartbeat_interval,
            health_resolution=hm.health_update_resolution,
            stats_every=hm.stats_update_every,
        )
        self.ingest = Ingest(
            self.decoder.decode,
            self.view,
            Metrics(manager_id="bench"),
            lambda addr, exc: None,
            VerdictLog(),
        )
        self.by_id = {a.id: a for a in topology.amphorae}
        self.since_flush = 0

    def after_burst(self, n: int, started: float = 0.0) -> None:
        """What the daemon does between bursts: publish, load wanted topologies,
        and (every FLUSH_EVERY) the writer taking pending."""
        self.ingest.publish()
        while self.view.has_wanted():
            ids = self.view.wanted(REFRESH_BATCH)
            found = {i: lb_topology(self.by_id[i]) for i in ids if i in self.by_id}
            now = time.monotonic()
            self.ingest.release(self.view.install(ids, found, now), now)
        self.since_flush += n
        if self.since_flush >= FLUSH_EVERY:
            self.view.pending = Pending()  # the null store
            self.since_flush = 0

    def run(self, datagrams: list[bytes]) -> float:
        """Seconds to handle ``datagrams`` in bursts, as Receiver.drain does."""
        handle = self.ingest.datagram
        monotonic, wall_ns = time.monotonic, time.time_ns
        began = time.perf_counter()
        for start in range(0, len(datagrams), BURST):
            for data in datagrams[start : start + BURST]:
                handle(data, None, monotonic(), wall_ns() // 1_000_000)
            self.after_burst(min(BURST, len(datagrams) - start))
        return time.perf_counter() - began

    def results(self) -> dict[str, int]:
        """The daemon's ``healthmgr_heartbeats_total`` by result."""
        return {k: int(v) for k, v in self.ingest.metrics.heartbeats.values.items() if v}


def lb_topology(a: AmphoraTopo) -> AmphoraTopology:
    """The topology the database would return for a simulated amphora."""
    listeners, pools = [], []
    for listener in a.listeners:
        listeners.append(
            ListenerTopology(
                listener.id, True, c.ONLINE, listener.pools[0].id if listener.pools else None
            )
        )
        for p in listener.pools:
            members = tuple(MemberTopology(m, p.id, True, c.ONLINE) for m in p.members)
            pools.append(PoolTopology(p.id, True, c.ONLINE, members))
    lb = LoadBalancerTopology(
        a.load_balancer_id, True, c.ACTIVE, c.ONLINE, tuple(listeners), tuple(pools)
    )
    return AmphoraTopology(a.id, c.ALLOCATED, c.STANDALONE, lb)


def rounds(sim: SimFleet, first: int, count: int, sent_at_ms: int) -> list[list[bytes]]:
    """Signed datagrams, one per amphora per round (no fault injection, no history)."""
    out = []
    for r in range(first, first + count):
        out.append(
            [
                envelope.seal(sim.key_id, a.id, sim.payload(i, r, sent_at_ms), sim.key(i))
                for i, a in enumerate(sim.topology.amphorae)
            ]
        )
    return out


# ---------------------------------------------------------------- memory


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def malloc_trim() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes of ``root`` and everything it reaches (not counted twice; shared
    immortal objects such as small ints and enum members are not skipped)."""
    size, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, type):
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
        if hasattr(type(obj), "__slots__"):
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    stack.append(getattr(obj, name, None))
    return size


def live_bytes(p: Path_) -> dict[str, int]:
    """Deep size of the long-lived per-amphora structures, by owner."""
    seen: set[int] = set()
    d, v = p.decoder, p.view
    return {
        "view_amphorae": deep_size(v._amps, seen),
        "view_lb_hashes": deep_size(v._lb_hash, seen),
        "view_topology_lru": deep_size(v._lbs, seen),
        "replay_windows": deep_size(d.replay, seen),
        "derived_keys": deep_size(d.keyring, seen),
        "fleet": deep_size(p.fleet, seen),
    }


# ---------------------------------------------------------------- one size


def measure_size(n: int, steady: int) -> dict[str, Any]:
    """One process, one fleet size: first contact, steady rounds, memory."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    sim = SimFleet.create(n, MASTER)
    steady_rounds = max(1, min(200, -(-steady // n)))
    sent_at = int(time.time() * 1000)
    batches = rounds(sim, 0, 1 + steady_rounds, sent_at)
    hmac_us = hmac_cost(sim.key(0), batches[0][0])
    p = Path_(sim.topology)
    gc.collect()
    malloc_trim()
    base = rss_bytes()
    first = p.run(batches[0])  # the datagrams stay: RSS counts the manager's objects only
    gc.collect()
    rss_first = rss_bytes()
    tracked = p.view.tracked()
    times = []
    for r in range(1, len(batches)):
        times.append(p.run(batches[r]) / n)
    gc.collect()
    rss_steady = rss_bytes()
    malloc_trim()
    rss_trim = rss_bytes()
    live = live_bytes(p)
    return {
        "amphorae": n,
        "tracked": tracked,
        "results": p.results(),
        "first_contact_us": round(first / n * 1e6, 2),
        "steady_rounds": len(times),
        "steady_us": round(statistics.median(times) * 1e6, 2),
        "steady_best_us": round(min(times) * 1e6, 2),
        "steady_per_s": round(1 / statistics.median(times)),
        "rss_per_amphora": {
            "after_first_round": round((rss_first - base) / n),
            "after_steady": round((rss_steady - base) / n),
            "after_malloc_trim": round((rss_trim - base) / n),
        },
        "live_bytes_per_amphora": round(sum(live.values()) / n),
        "live_bytes": {k: round(v / n) for k, v in live.items()},
        "hmac_sha256_us": hmac_us,
    }


def loop(n: int, count: int) -> None:
    """Only run ``count`` (0-5) steady rounds of ``n`` amphorae, untimed: under
    callgrind, (instructions of 5 - instructions of 0) / (5 n) is the cost of a
    steady-state heartbeat, which the load of a shared machine does not move."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    sim = SimFleet.create(n, MASTER)
    batches = rounds(sim, 0, 2 + LOOP_ROUNDS, int(time.time() * 1000))
    p = Path_(sim.topology)
    p.run(batches[0])
    p.run(batches[1])
    for batch in batches[2 : 2 + count]:
        p.run(batch)


def micro(what: str, count: int) -> None:
    """Only call one step ``count`` times on a seed heartbeat, untimed (callgrind:
    subtract a run with 0): ``payload`` (unpack_payload), ``stats_update``
    (the StatsUpdate the view builds per listener), ``none`` (the loop)."""
    from healthmgr.rules.stats import _update
    from healthmgr.wire.payload import pack_payload, unpack_payload
    from tests.wire.native_samples import AMPHORA, seed

    hb = seed()
    data, listener = pack_payload(hb), hb.listeners[0]
    step = {
        "payload": lambda: unpack_payload(data, AMPHORA),
        "stats_update": lambda: _update(hb, listener),
        "none": lambda: None,
    }[what]
    for _ in range(count):
        step()


def hmac_cost(key: bytes, datagram: bytes, count: int = 20000) -> float:
    """Best microseconds of one HMAC-SHA256 over a seed datagram's signed bytes."""
    digest, signed = hmac.digest, datagram[:-32]
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(count):
            digest(key, signed, "sha256")
        best = min(best, (time.perf_counter() - began) / count)
    return round(best * 1e6, 3)


# ---------------------------------------------------------------- through UDP


def sender(port: int, n: int, first: int, count: int, sent_at_ms: int) -> None:
    """The sender process: pre-sign, say ready, blast every round as fast as it can."""
    sim = SimFleet.create(n, MASTER)
    batches = rounds(sim, first, count, sent_at_ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    print("ready", flush=True)
    sys.stdin.readline()
    sendto, address, sent = sock.sendto, ("127.0.0.1", port), 0
    began = time.perf_counter()
    for batch in batches:
        for datagram in batch:
            try:
                sendto(datagram, address)
                sent += 1
            except OSError:
                pass
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - began}), flush=True)


def udp_run(n: int, count: int, handler: str, mode: str) -> dict[str, Any]:
    """Datagrams/s the trio receive loop handles, the sender on the other core
    sending meanwhile (``concurrent``) or before the loop starts (``prefilled``)."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    sim = SimFleet.create(n, MASTER)
    sent_at = int(time.time() * 1000)
    p = Path_(sim.topology)
    p.run(rounds(sim, 0, 1, sent_at)[0])  # first contact: every amphora tracked
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--sender",
            str(sock.getsockname()[1]),
            str(n),
            "1",
            str(count),
            str(sent_at),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None and child.stdin is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("sender did not start")
    handle: Callable[[bytes, object, float, int], None]
    handle = p.ingest.datagram if handler == "ingest" else (lambda d, a, m, w: None)
    total = n * count
    receiver = Receiver(sock, handle, p.after_burst)
    marks: list[tuple[float, float]] = []
    sent: dict[str, Any] = {}
    prefilled = mode == "prefilled"

    async def main() -> None:
        child.stdin.write("go\n")
        child.stdin.flush()
        if prefilled:  # the socket holds every datagram before the loop reads one
            sent.update(json.loads(await trio.to_thread.run_sync(child.stdout.readline)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver.run)
            while receiver.received == 0:
                await trio.sleep(0.0005)
            marks.append((time.perf_counter(), time.process_time()))
            last, idle = receiver.received, 0
            while receiver.received < total and idle < 20:
                await trio.sleep(0.05)
                idle = idle + 1 if receiver.received == last else 0
                if receiver.received != last:
                    marks[1:] = [(time.perf_counter(), time.process_time())]
                last = receiver.received
            nursery.cancel_scope.cancel()

    trio.run(main)
    sent = sent or json.loads(child.stdout.readline())
    child.wait()
    elapsed, cpu = (b - a for a, b in zip(*marks, strict=True))
    received = receiver.received
    drops = receiver.kernel_drops()
    sock.close()
    return {
        "handler": handler,
        "mode": mode,
        "amphorae": n,
        "sent": sent["sent"],
        "sender_per_s": round(sent["sent"] / sent["seconds"]),
        "received": received,
        "kernel_drops": drops,
        "received_per_s": round(received / elapsed) if elapsed > 0 else None,
        # per second of the receiving process's CPU: what it could do with a core of its own
        "received_per_cpu_s": round(received / cpu) if cpu > 0 else None,
    }


# ---------------------------------------------------------------- driver


def child(args: list[str], pythonpath: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout)


def one_tree(args: argparse.Namespace, pythonpath: str | None) -> dict[str, Any]:
    sizes = [
        child(["--one", str(n), "--steady", str(args.steady)], pythonpath)
        for n in map(int, args.amphorae.split(","))
    ]
    out: dict[str, Any] = {"sizes": sizes}
    if not args.no_udp:
        out["udp"] = {
            f"{h}_{m}": child(
                ["--udp", h, m, str(args.udp_amphorae), str(args.udp_rounds)], pythonpath
            )
            for h in ("null", "ingest")
            for m in ("concurrent", "prefilled")
        }
    return out


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """The figures an A/B compares, flat."""
    flat: dict[str, Any] = {}
    for s in run["sizes"]:
        n = s["amphorae"]
        flat[f"steady_us@{n}"] = s["steady_us"]
        flat[f"first_contact_us@{n}"] = s["first_contact_us"]
        flat[f"rss_per_amphora@{n}"] = s["rss_per_amphora"]["after_steady"]
        flat[f"live_bytes_per_amphora@{n}"] = s["live_bytes_per_amphora"]
    for h, u in run.get("udp", {}).items():
        flat[f"udp_{h}_per_s"] = u["received_per_s"]
        flat[f"udp_{h}_per_cpu_s"] = u["received_per_cpu_s"]
    return flat


def trees(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved runs of each tree, ``--repeat`` times; medians and ratios."""
    named = dict(item.split("=", 1) for item in args.trees.split(","))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in named}
    for _ in range(args.repeat):
        for name, path in named.items():
            runs[name].append(summary(one_tree(args, str(Path(path).resolve()))))
    medians = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    names = list(named)
    ratios = {}
    if len(names) == 2:
        a, b = medians[names[0]], medians[names[1]]
        ratios = {k: round(b[k] / a[k], 3) for k in a if a[k]}
    return {
        "trees": named,
        "repeat": args.repeat,
        "median": medians,
        f"ratio_{names[-1]}_over_{names[0]}": ratios,
        "runs": runs,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amphorae", default="1000,10000,100000,500000")
    p.add_argument(
        "--steady",
        type=int,
        default=200_000,
        help="steady-state heartbeats per size (whole rounds, at least one)",
    )
    p.add_argument("--udp-amphorae", type=int, default=10_000)
    p.add_argument("--udp-rounds", type=int, default=20)
    p.add_argument("--no-udp", action="store_true")
    p.add_argument("--trees", help="name=path,name=path: interleaved A/B of two checkouts")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--loop",
        nargs=2,
        type=int,
        metavar=("AMPHORAE", "ROUNDS"),
        help=f"only run ROUNDS (0-{LOOP_ROUNDS}) steady rounds, untimed (for callgrind)",
    )
    p.add_argument(
        "--micro",
        nargs=2,
        metavar=("STEP", "N"),
        help="only call STEP (payload, stats_update, none) N times, untimed (for callgrind)",
    )
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--udp", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--sender", nargs=5, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sender:
        sender(*args.sender)
    elif args.loop:
        loop(*args.loop)
    elif args.micro:
        micro(args.micro[0], int(args.micro[1]))
    elif args.one:
        print(json.dumps(measure_size(args.one, args.steady)))
    elif args.udp:
        handler, mode, n, count = args.udp
        print(json.dumps(udp_run(int(n), int(count), handler, mode)))
    elif args.trees:
        print(json.dumps(trees(args), indent=1))
    else:
        result = {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "healthmgr": os.path.dirname(sys.modules["healthmgr"].__file__ or ""),
            **one_tree(args, None),
        }
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

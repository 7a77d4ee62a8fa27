"""Where a running daemon's CPU goes, by thread and by part of the flush, as JSON.

One ``throughput.py`` step (a real daemon, a fresh database holding N seed
amphorae, the fleet simulator sending at RATE) sampled by ``py-spy record
--threads --idle`` (py-spy must be installed: ``pip install py-spy``).
Samples are counted per thread (the trio loop, the writer's flush in its
worker thread, other worker threads) and, for the flush, per part of it;
"waiting" is a sample in a blocking call (the database's answer, epoll).
py-spy's default samples wall time, so a thread waiting for the GIL counts as
busy; ``--gil`` samples only the thread holding it (where the CPU goes).
``thread_cpu_us_per_heartbeat`` is the kernel's account over the step
(/proc): the trio loop's and the worker threads' (the flush) CPU per
heartbeat, user and system, and context switches; ``--cpus 0`` pins the
daemon to one CPU (its two threads then never run at once).

    .venv/bin/python tests/bench/profile_writer.py [--database postgresql]
        [--amphorae 20000] [--rate 5000] [--seconds 8] [--raw FILE] [--gil] [--cpus 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bench")]

import throughput  # noqa: E402

from healthmgr.chaos.fleet import Topology  # noqa: E402

# Parts of the flush, first match in the stack wins.
PARTS = (
    "ListDumper",
    "Pending.take",
    "valid_parts",
    "health_params",
    "stats_params",
    "report_params",
    "_lock_reports",
    "status_groups",
    "stats_rounds",
    "_recover",
)
WAITS = ("Connection.wait", "get_events", "_wait", "select", "epoll", "sleep", "WorkerThread._work")


def classify(path: Path) -> dict[str, dict[str, int]]:
    threads: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        leaf = frames[-1]
        if "build_and_flush" in stack:
            thread = "writer (flush)"
        elif "MainThread" in frames[0]:
            thread = "trio loop"
        else:
            thread = "other threads"
        if any(w in leaf for w in WAITS):
            part = "waiting"
        else:
            part = next((p for p in PARTS if p in stack), "rest")
        threads.setdefault(thread, Counter())[part] += int(count)
    return {t: dict(c.most_common()) for t, c in threads.items()}


def thread_cpu(pid: int) -> dict[str, Counter[str]]:
    """Per thread: CPU seconds (user, system) and context switches (voluntary:
    it blocked, e.g. waiting for the GIL; involuntary: preempted).

    The main thread is the trio loop; trio's worker threads are summed (the
    writer's flush runs in whichever worker trio hands it). Their CPU is the
    process's (which keeps that of threads that ended: trio ends idle workers)
    less the main thread's; their switches count live threads only.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, Counter[str]] = {"main": Counter(), "workers": Counter()}
    total = Path(f"/proc/{pid}/stat").read_text()
    fields = total[total.rindex(")") + 2 :].split()
    out["workers"]["user_s"] = int(fields[11]) / tick
    out["workers"]["system_s"] = int(fields[12]) / tick
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended between listing and reading
        fields = stat[stat.rindex(")") + 2 :].split()
        main = task.name == str(pid)
        c = out["main" if main else "workers"]
        if main:
            for key, index in (("user_s", 11), ("system_s", 12)):
                c[key] = int(fields[index]) / tick
                out["workers"][key] -= c[key]
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key.endswith("ctxt_switches"):
                c[key] += int(value)
    return out


def per_heartbeat(
    before: dict[str, Counter[str]], after: dict[str, Counter[str]], n: int
) -> dict[str, dict[str, float]]:
    """Per thread and heartbeat: µs of CPU (user, system, both) and context
    switches (threads that ended during the step are lost)."""
    out = {}
    for thread, now in after.items():
        d = {k: v - before[thread][k] for k, v in now.items()}
        cpu = {f"{k[:-2]}_us": 1e6 * d[k] / max(1, n) for k in ("user_s", "system_s")}
        cpu["cpu_us"] = sum(cpu.values())
        switches = {k: d[k] / max(1, n) for k in d if k.endswith("ctxt_switches")}
        out[thread] = {k: round(v, 2) for k, v in (cpu | switches).items()}
    return out


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of the process on ``cpus`` (threads started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", default="postgresql")
    p.add_argument("--amphorae", type=int, default=20000)
    p.add_argument("--rate", type=float, default=5000)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--raw", type=Path, help="keep py-spy's raw samples here")
    p.add_argument(
        "--cpus",
        help="pin the daemon's threads to these CPUs (e.g. 0): its threads then never "
        "run at once, which shows what contending for the GIL across cores costs",
    )
    p.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: CPU in Python, not time waiting for it",
    )
    args = p.parse_args()
    topology = Topology.generate(args.amphorae, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "samples.txt"
        with throughput.Bench(args.database, topology, Path(tmp), args.seconds) as bench:
            bench.warm()
            if args.cpus:
                pin(bench.daemon.proc.pid, {int(c) for c in args.cpus.split(",")})
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--threads",
                    "--gil" if args.gil else "--idle",
                    "-r",
                    "200",
                    "-o",
                    str(raw),
                    "-p",
                    str(bench.daemon.proc.pid),
                    "-d",
                    str(int(args.seconds)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            before = thread_cpu(bench.daemon.proc.pid)
            step = bench.step(args.rate)
            threads = per_heartbeat(before, thread_cpu(bench.daemon.proc.pid), step["accepted"])
            spy.wait()
        out = {
            "database": args.database,
            "rate": args.rate,
            "step": step,
            "thread_cpu_us_per_heartbeat": threads,
            "samples_per_s": 200,
            "gil_only": args.gil,
            "pinned_to": args.cpus,
            "threads": classify(raw),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a running daemon's CPU goes, by thread and by part of the flush, as JSON.

One ``throughput.py`` step (a real daemon, a fresh database holding N seed
amphorae, the fleet simulator sending at RATE) sampled by ``py-spy record
--threads --idle`` (py-spy must be installed: ``pip install py-spy``).
Samples are counted per thread (the trio loop, the writer's flush in its
worker thread, other worker threads) and, for the flush, per part of it;
"waiting" is a sample in a blocking call (the database's answer, epoll).

    .venv/bin/python tests/bench/profile_writer.py [--database postgresql]
        [--amphorae 20000] [--rate 5000] [--seconds 8] [--raw FILE]
"""

from __future__ import annotations

import argparse
import json
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database", default="postgresql")
    p.add_argument("--amphorae", type=int, default=20000)
    p.add_argument("--rate", type=float, default=5000)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--raw", type=Path, help="keep py-spy's raw samples here")
    args = p.parse_args()
    topology = Topology.generate(args.amphorae, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "samples.txt"
        with throughput.Bench(args.database, topology, Path(tmp), args.seconds) as bench:
            bench.warm()
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--threads",
                    "--idle",
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
            step = bench.step(args.rate)
            spy.wait()
        out = {
            "database": args.database,
            "rate": args.rate,
            "step": step,
            "samples_per_s": 200,
            "threads": classify(raw),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

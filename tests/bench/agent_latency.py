"""Bad news latency: a member killed behind real HAProxy, until ERROR is in the database, as JSON.

    .venv/bin/python tests/bench/agent_latency.py [--trials 100] [--inter-ms 500] [--fall 2]
        [--database sqlite|postgresql|mysql]

One stack (tests/agent/stack.py): a fresh database with the seed load
balancer, web servers, real HAProxy (``check inter <inter-ms> fall <fall>
rise 1``), ``healthmgr serve`` and ``amphora-agent``, both at their default
intervals (heartbeats every 10 s, polls every 1 s, flushes every 0.25 s).
Each trial waits a random 0-1 s (so kills land anywhere in the agent's poll
period), SIGKILLs member 2's web server and measures

* ``kill_to_error_s``: the kill until ``member.operating_status`` is ERROR
  (the database is read every 10 ms);
* ``haproxy_down_to_error_s``: HAProxy's "Server ... is DOWN" log line (stamped
  on arrival) until then: the agent's and the manager's share;
* ``start_to_online_s``: the web server restarted until ONLINE again.

The target is ``inter x fall + 1.5 s`` at p99 for ``kill_to_error_s``
(``within_target`` counts the trials that made it).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from tests.agent.stack import Stack, when  # noqa: E402
from tests.conftest import fresh_database_url  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank), max and mean, in seconds, 3 decimals."""
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    out = {f"p{p}": rank(p) for p in (50, 90, 99)}
    out |= {"max": ordered[-1], "mean": statistics.fmean(ordered)}
    return {k: round(v, 3) for k, v in out.items()}


def trial(stack: Stack, rng: random.Random) -> dict[str, float | None]:
    time.sleep(rng.uniform(0, 1))
    killed = stack.kill_member(1)
    error = when(lambda: stack.status(1) == "ERROR", 30, "member ERROR")
    down = stack.haproxy_changed(1, "DOWN", killed)
    started = time.monotonic()
    stack.start_member(1)
    online = when(lambda: stack.status(1) == "ONLINE", 30, "member ONLINE again")
    return {
        "kill_to_error_s": error - killed,
        "haproxy_down_to_error_s": None if down is None else error - down,
        "start_to_online_s": online - started,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--inter-ms", type=int, default=500)
    p.add_argument("--fall", type=int, default=2)
    p.add_argument("--database", default="sqlite", choices=("sqlite", "postgresql", "mysql"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--haproxy", default="/usr/sbin/haproxy")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    results: list[dict[str, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="agent-latency-") as tmp:
        url, drop = fresh_database_url(args.database, Path(tmp))
        stack = Stack(Path(tmp), args.haproxy, inter_ms=args.inter_ms, fall=args.fall)
        try:
            stack.start(url)
            for _ in range(args.trials):
                results.append(trial(stack, rng))
        finally:
            stack.close()
            drop()
    target = stack.detection_s + 1.5
    figures: dict[str, Any] = {
        "benchmark": "agent_latency",
        "python": platform.python_version(),
        "database": args.database,
        "trials": len(results),
        "haproxy_inter_ms": args.inter_ms,
        "haproxy_fall": args.fall,
        "agent": {"heartbeat_interval_s": 10.0, "poll_interval_s": 1.0, "coalesce_window_s": 0.2},
        "manager": {"heartbeat_interval_s": 10.0, "flush_interval_s": 0.25},
        "target_s": target,
        "within_target": sum(r["kill_to_error_s"] <= target for r in results),  # type: ignore[operator]
    }
    for name in ("kill_to_error_s", "haproxy_down_to_error_s", "start_to_online_s"):
        values = [r[name] for r in results if r[name] is not None]
        figures[name] = percentiles(values) if values else None  # type: ignore[arg-type]
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

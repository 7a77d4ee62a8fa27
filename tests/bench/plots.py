"""PNG plots of throughput runs for docs/performance.md.

Reads the JSON that ``tests/bench/throughput.py`` prints (one file per run,
or the JSON of ``--compare``, whose runs are plotted per side) and draws, per
database and heartbeat shape, the daemon's CPU per heartbeat and the p99
arrival-to-commit time against the offered rate, failing steps marked.

    .venv/bin/python tests/bench/plots.py --out docs RESULT.json [MORE.json ...]

Needs matplotlib: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def series(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(label, throughput run) pairs of one JSON file."""
    data = json.loads(path.read_text())
    if "runs" in data and isinstance(data["runs"], dict):  # compare.py output
        return [
            (f"{side} {index + 1}" if len(results) > 1 else side, run)
            for side, results in data["runs"].items()
            for index, result in enumerate(results)
            for run in result["runs"]
        ]
    return [(path.stem, run) for run in data["runs"]]


def plot(
    runs: list[tuple[str, dict[str, Any]]],
    out: Path,
    p99_target: float,
    name: str = "performance-throughput",
) -> list[Path]:
    """One PNG per (database, shape): daemon CPU per heartbeat and p99 commit lag
    against the offered rate."""
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for label, run in runs:
        groups.setdefault((run["database"], run["shape"].split(":")[0]), []).append((label, run))
    written = []
    for (database, shape), members in sorted(groups.items()):
        fig, (cpu_ax, lag_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
        for index, (label, run) in enumerate(members):
            steps = run["steps"]
            offered = [s["rate_target"] for s in steps]
            style = {
                "marker": "o",
                "label": label,
                "color": _colour(label, index),
                "linestyle": "-" if index % 2 else "--",
            }
            cpu_ax.plot(offered, [s.get("daemon_cpu_us_per_heartbeat") for s in steps], **style)
            lags = [s["p99_arrival_to_commit_s"] or 0 for s in steps]
            lag_ax.plot(offered, lags, **style)
            failed = [
                (o, lag) for o, lag, s in zip(offered, lags, steps, strict=True) if not s["passed"]
            ]
            if failed:
                lag_ax.scatter(
                    *zip(*failed, strict=True), marker="x", s=80, color=style["color"], zorder=3
                )
        cpu_ax.set(
            xlabel="offered heartbeats/s",
            ylabel="µs of daemon CPU per heartbeat",
            title=f"{database}, {shape}: daemon CPU per heartbeat",
        )
        cpu_ax.set_ylim(bottom=0)
        lag_ax.axhline(p99_target, color="red", linewidth=0.8, linestyle="--")
        lag_ax.set(
            xlabel="offered heartbeats/s",
            ylabel="p99 arrival→commit (s, bucket bound)",
            title=f"{database}, {shape}: p99 commit lag (x: step failed)",
        )
        for ax in (cpu_ax, lag_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{name}-{database}-{shape}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _colour(label: str, index: int) -> str:
    """compare.py's sides in two colours (old blue, new red); other runs cycle."""
    return {"old": "tab:blue", "new": "tab:red"}.get(label.split()[0], f"C{index % 10}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="JSON printed by throughput.py")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--p99-target", type=float, default=1.0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [item for path in args.results for item in series(path)]
    for path in plot(runs, args.out, args.p99_target):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

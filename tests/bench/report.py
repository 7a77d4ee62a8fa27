"""docs/performance.md's current figures, tables and plots, from one command.

    .venv/bin/python tests/bench/report.py [--quick] [--out docs]
    .venv/bin/python tests/bench/report.py --from docs/performance-report.json

Runs ``throughput.py`` (one real daemon on SQLite and PostgreSQL, seed and
large heartbeats at rising rates, the store alone, the daemon's memory at
100,000 amphorae) and ``receive.py`` (the receive path alone: through UDP
and in process from 1,000 to 500,000 amphorae), saves their JSON as
``performance-report.json``, draws the PNGs, and rewrites the part of
``performance.md`` between the two ``report`` markers. ``--from`` renders
a saved JSON again without running anything. ``--quick`` runs small sizes
(to try the command; its figures are not the doc's).

Needs matplotlib (``pip install -e '.[bench]'``) and the test services.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(HERE.parents[1]))

from tests.bench import plots  # noqa: E402

BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
TARGETS = {  # (database, shape) -> heartbeats/s the issue asks of one process
    ("postgresql", "seed"): 15000,
    ("sqlite", "seed"): 20000,
    ("postgresql", "large"): 4000,
}
RECEIVE_TARGET, RSS_TARGET = 60000, 1000

FULL = {
    "throughput": [
        "--databases", "sqlite,postgresql", "--amphorae", "20000",
        "--rates", "2500,5000,7500,10000,12500,15000,17500,20000,25000",
        "--large-amphorae", "1000", "--large-rates", "500,1000,1500,2000,3000,4000,5000",
        "--duration", "4", "--memory-amphorae", "100000", "--limit-heartbeats", "10000",
    ],
    "receive": [
        "--amphorae", "1000,10000,100000,500000", "--steady", "200000",
        "--udp-amphorae", "10000", "--udp-rounds", "20",
    ],
}  # fmt: skip
QUICK = {
    "throughput": [
        "--databases", "sqlite,postgresql", "--amphorae", "2000", "--rates", "1000,2000",
        "--large-amphorae", "200", "--large-rates", "200", "--duration", "2",
        "--memory-amphorae", "5000", "--limit-heartbeats", "1000",
    ],
    "receive": [
        "--amphorae", "1000,5000", "--steady", "10000", "--udp-amphorae", "1000",
        "--udp-rounds", "5",
    ],
}  # fmt: skip


def run(script: str, args: list[str]) -> dict[str, Any]:
    """One bench script's JSON; its progress lines go to our stderr."""
    out = subprocess.run(
        [sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(out.stdout)


# ------------------------------------------------------------------ tables


def _n(value: float | None, unit: str = "") -> str:
    return "none" if value is None else f"{value:,.0f}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else ""


def _shape(run: dict[str, Any]) -> str:
    return run["shape"].split(":")[0]


def _top_step(run: dict[str, Any]) -> dict[str, Any]:
    """The highest clean step, or the first if none passed (its CPU figures)."""
    clean = [s for s in run["steps"] if s["passed"]]
    return clean[-1] if clean else run["steps"][0]


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table, one string per line."""

    def line(cells: Sequence[object]) -> str:
        return "|" + "".join(f" {cell} |" if cell != "" else " |" for cell in cells)

    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


def _target_rows(report: dict[str, Any]) -> Iterator[list[object]]:
    t, r = report["throughput"], report["receive"]
    for run in t["runs"]:
        target = TARGETS.get((run["database"], _shape(run)))
        if target is None:
            continue
        step, best = _top_step(run), run["highest_clean_rate_per_s"]
        core, cores = step.get("daemon_bound_per_s"), step.get("cpu_bound_per_s")
        store = t.get("limits", {}).get(run["database"], {}).get("heartbeats_per_s")
        store = store if _shape(run) == "seed" else None
        limit = min(x for x in (core, cores, store) if x)
        # Every step offered passed: the rate is a floor, not the process's limit.
        floor = "≥ " if run["steps"][-1]["passed"] else ""
        yield [
            f"{_shape(run)} heartbeats/s, {run['database']}, every one in the database, p99 ≤ 1 s",
            f"≥ {target:,}",
            f"**{floor}{_n(best)}**",
            f"daemon on one core {_n(core)}; daemon + sender + server on "
            f"{t['machine']['cpus']} cores {_n(cores)}"
            + (f"; the store alone {_n(store)}" if store else ""),
            _ratio(best, limit),
        ]
    udp = r.get("udp", {})
    if udp:
        got = udp["ingest_concurrent"]["received_per_s"]
        null = udp["null_concurrent"]["received_per_s"]
        yield [
            "receive path alone through UDP, seed/s",
            f"≥ {RECEIVE_TARGET:,}",
            f"**{_n(got)}**",
            f"the same loop with a null handler {_n(null)}",
            _ratio(got, null),
        ]
    for size in r["sizes"]:
        if size["amphorae"] >= 100000:
            rss, live = size["rss_per_amphora"]["after_steady"], size["live_bytes_per_amphora"]
            yield [
                f"RSS per tracked amphora, {size['amphorae']:,}, in process",
                f"≤ {RSS_TARGET:,} B",
                f"**{_n(rss, ' B')}**",
                f"its live structures {_n(live, ' B')}",
                _ratio(rss, live),
            ]
    memory = t.get("memory")
    if memory:
        yield [
            f"RSS per tracked amphora, {memory['amphorae']:,}, the daemon (SQLite)",
            f"≤ {RSS_TARGET:,} B",
            f"**{_n(memory['bytes_per_amphora'], ' B')}**",
            "",
            "",
        ]


def targets_table(report: dict[str, Any]) -> list[str]:
    header = ["metric", "target", "measured", "physical limit, same run", "measured / limit"]
    return _table(header, _target_rows(report))


CPU_PARTS = (
    "daemon_cpu_us_per_heartbeat",
    "sender_cpu_us_per_heartbeat",
    "db_server_cpu_us_per_heartbeat",
)


def steps_table(report: dict[str, Any]) -> list[str]:
    header = [
        "database, shape",
        "offered/s",
        "accepted",
        "p99 commit (s)",
        "µs CPU per heartbeat: daemon / sender / server",
        "bound/s: one core / all cores",
        "load",
        "clean",
    ]
    return _table(
        header,
        (
            [
                f"{run['database']}, {_shape(run)}",
                f"{s['rate_target']:,.0f}",
                f"{s['accepted']:,}/{s['sent']:,}",
                s["p99_arrival_to_commit_s"],
                " / ".join("" if s.get(k) is None else f"{s[k]:g}" for k in CPU_PARTS),
                f"{_n(s.get('daemon_bound_per_s'))} / {_n(s.get('cpu_bound_per_s'))}",
                s["load_average"],
                "yes" if s["passed"] else "no",
            ]
            for run in report["throughput"]["runs"]
            for s in run["steps"]
        ),
    )


def scaling_table(report: dict[str, Any]) -> list[str]:
    header = [
        "amphorae",
        "steady µs per heartbeat (best)",
        "first contact µs",
        "RSS per amphora",
        "live structures per amphora",
    ]
    return _table(
        header,
        (
            [
                f"{s['amphorae']:,}",
                f"{s['steady_us']} ({s['steady_best_us']})",
                s["first_contact_us"],
                _n(s["rss_per_amphora"]["after_steady"], " B"),
                _n(s["live_bytes_per_amphora"], " B"),
            ]
            for s in report["receive"]["sizes"]
        ),
    )


def store_table(report: dict[str, Any]) -> list[str]:
    header = [
        "database",
        "rows per flush",
        "rows/s",
        "seed heartbeats/s",
        "rows/s inside the statements",
    ]
    return _table(
        header,
        (
            [
                database,
                f"{lim['batch_rows']:,}",
                _n(lim["rows_per_s"]),
                _n(lim["heartbeats_per_s"]),
                _n(lim["rows_per_s_in_statements"]),
            ]
            for database, lim in report["throughput"].get("limits", {}).items()
        ),
    )


def render(report: dict[str, Any], images: list[Path]) -> str:
    m = report["throughput"]["machine"]
    parts = [
        BEGIN,
        "",
        f"Generated by `tests/bench/report.py` on {report['date']} (commit {report['commit']}, "
        f"Python {m['python']}, {m['cpus']} CPUs; load average {report['load_before']} before "
        "the run). Do not edit by hand: run the command again.",
        "",
        *targets_table(report),
        "",
        "Every step of the daemon runs (the sender and the database server on the same "
        "machine; the server's CPU counts only its processes serving the bench's database "
        "on PostgreSQL, and the whole server on MariaDB):",
        "",
        *steps_table(report),
        "",
        "The store alone (the physical limit of the writer's database), flushing batches of "
        "seed heartbeats:",
        "",
        *store_table(report),
        "",
        "The receive path alone (null store), in process, from 1,000 to 500,000 amphorae:",
        "",
        *scaling_table(report),
        "",
        *(f"![{p.stem}]({p.name})" for p in images),
        "",
        END,
    ]
    return "\n".join(parts)


def splice(doc: Path, block: str) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} block to rewrite")
    head, rest = text.split(BEGIN, 1)
    doc.write_text(head + block + rest.split(END, 1)[1])


def scaling_plot(report: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    sizes = report["receive"]["sizes"]
    n = [s["amphorae"] for s in sizes]
    fig, (us_ax, rss_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    us_ax.plot(n, [s["steady_us"] for s in sizes], marker="o", label="median")
    us_ax.plot(n, [s["steady_best_us"] for s in sizes], marker="o", label="best")
    us_ax.set(xscale="log", xlabel="amphorae", ylabel="µs per steady heartbeat")
    us_ax.set_title("receive path alone: cost per heartbeat")
    rss_ax.plot(n, [s["rss_per_amphora"]["after_steady"] for s in sizes], marker="o", label="RSS")
    rss_ax.plot(n, [s["live_bytes_per_amphora"] for s in sizes], marker="o", label="live")
    rss_ax.axhline(RSS_TARGET, color="red", linewidth=0.8, linestyle="--")
    rss_ax.set(xscale="log", xlabel="amphorae", ylabel="bytes per tracked amphora")
    rss_ax.set_title("memory per tracked amphora")
    for ax in (us_ax, rss_ax):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "performance-scaling.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def measure(quick: bool) -> dict[str, Any]:
    import datetime
    import os

    plan = QUICK if quick else FULL
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "load_before": round(os.getloadavg()[0], 2),
        "quick": quick,
        "throughput": run("throughput.py", plan["throughput"]),
        "receive": run("receive.py", plan["receive"]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE.parents[1] / "docs")
    p.add_argument("--from", dest="source", type=Path, help="render this saved JSON only")
    p.add_argument("--quick", action="store_true", help="small sizes, to try the command")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source:
        report = json.loads(args.source.read_text())
    else:
        report = measure(args.quick)
        (args.out / "performance-report.json").write_text(json.dumps(report, indent=1) + "\n")
    runs = [("this run", run) for run in report["throughput"]["runs"]]
    images = plots.plot(runs, args.out, 1.0, "performance-report")
    images.append(scaling_plot(report, args.out))
    splice(args.out / "performance.md", render(report, images))
    for path in images:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

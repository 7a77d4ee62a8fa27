"""A/B comparison of a benchmark script against a git ref, in one invocation.

This machine's speed drifts by +-30 % over minutes, so a change is judged by
a ratio measured in one run: the script runs alternately from the working
tree (B, "new") and from ``REF`` (A, "old", a temporary tree made with
``git archive``), A/B/A/B..., each run printing its JSON on stdout. Every
number in the JSON (a dotted path; list elements named by their identifying
fields, e.g. ``runs.postgresql/seed.highest_clean_rate_per_s``) is reduced to
its median per side, and the ratio new / old is printed as JSON: ``ratios``
(the figures that differ), then ``figures`` (values, medians) and ``runs``.

Any bench script that prints JSON can use it, from the command line::

    .venv/bin/python tests/bench/compare.py --ref HEAD~1 --rounds 2 -- \\
        tests/bench/db.py --heartbeats 10000 --databases postgresql

or from its own ``--compare REF`` option (see :func:`compare_from_script`).
Each side runs its own copy of the script with ``PYTHONPATH`` and the working
directory set to its tree, so every process it starts (daemons, senders)
imports that tree's code. Both sides share this interpreter and its venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Fields that name an element of a list of results (joined with "/").
KEY_FIELDS = ("name", "database", "dialect", "shape", "amphorae", "rate_target")


def figures(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a JSON value, by dotted path (booleans are not figures)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from figures(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from figures(item, f"{path}.{_element_name(item, index)}")


def _element_name(item: Any, index: int) -> str:
    if isinstance(item, dict):
        parts = [str(item[k]).split(":")[0] for k in KEY_FIELDS if item.get(k) is not None]
        if parts:
            return "/".join(parts)
    return str(index)


def export_tree(ref: str, into: Path) -> str:
    """The files of ``ref`` under ``into``; returns the commit it names."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    into.mkdir()
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", commit], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    archive.unlink()
    return commit


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def run_once(tree: Path, script: str, args: Sequence[str]) -> dict[str, Any]:
    """One run of ``script`` (relative to the tree) with that tree's code; its JSON."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, script, *args],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def compare(
    script: str,
    args: Sequence[str],
    ref: str = "HEAD~1",
    rounds: int = 2,
    new_ref: str | None = None,
    same_script: bool = False,
) -> dict[str, Any]:
    """Run ``script args`` alternately from ``ref`` and the working tree (or
    ``new_ref``: then the working tree may change meanwhile); the ratios.

    ``same_script``: the old side runs the new side's copy of the script (on
    its own code), for figures the old script did not print yet.
    """
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        commit = export_tree(ref, Path(tmp) / "old")
        trees = {"old": Path(tmp) / "old" / "tree", "new": ROOT}
        new = {
            "ref": "working tree",
            "commit": _git("rev-parse", "HEAD").strip(),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no").strip()),
        }
        if new_ref:
            new = {"ref": new_ref, "commit": export_tree(new_ref, Path(tmp) / "new")}
            trees["new"] = Path(tmp) / "new" / "tree"
        if same_script:
            shutil.copyfile(trees["new"] / script, trees["old"] / script)
        for side, tree in trees.items():
            if not (tree / script).exists():
                raise SystemExit(f"{script} does not exist in the {side} tree")
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for index in range(rounds):
            for side in ("old", "new"):
                started = time.monotonic()
                runs[side].append(run_once(trees[side], script, args))
                print(
                    json.dumps(
                        {
                            "compare": side,
                            "round": index + 1,
                            "seconds": round(time.monotonic() - started, 1),
                            "load_average": os.getloadavg()[0],
                        }
                    ),
                    file=sys.stderr,
                )
    figures_ = ratios(runs["old"], runs["new"])
    return {
        "script": script,
        "args": list(args),
        "old": {"ref": ref, "commit": commit},
        "new": new,
        "rounds": rounds,
        "order": "old, new, old, new, ...",
        "ratios": {path: f["ratio"] for path, f in figures_.items() if f["ratio"] != 1.0},
        "figures": figures_,
        "runs": runs,
    }


def ratios(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: the values of each side, their medians, and new / old."""
    values: dict[str, dict[str, list[float]]] = {}
    for side, results in (("old", old), ("new", new)):
        for result in results:
            for path, number in figures(result):
                values.setdefault(path, {"old": [], "new": []})[side].append(number)
    out: dict[str, Any] = {}
    for path, sides in values.items():
        medians = {s: statistics.median(v) if v else None for s, v in sides.items()}
        a, b = medians["old"], medians["new"]
        out[path] = {
            **{f"{s}_values": v for s, v in sides.items()},
            "old": a,
            "new": b,
            "ratio": round(b / a, 3) if a and b is not None else None,
        }
    return out


def compare_from_script(script_file: str, argv: Sequence[str]) -> bool:
    """For a bench script's ``main``: ``--compare [REF] [--compare-rounds N] [--compare-new REF]``.

    Returns False when ``argv`` has no ``--compare`` (the script runs as
    usual); otherwise runs the comparison, prints its JSON and returns True.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--compare", nargs="?", const="HEAD~1")
    p.add_argument("--compare-rounds", type=int, default=2)
    p.add_argument("--compare-new")
    p.add_argument("--compare-same-script", action="store_true")
    known, rest = p.parse_known_args(argv)
    if known.compare is None:
        return False
    script = str(Path(script_file).resolve().relative_to(ROOT))
    result = compare(
        script,
        rest,
        known.compare,
        known.compare_rounds,
        known.compare_new,
        known.compare_same_script,
    )
    print(json.dumps(result, indent=1))
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="HEAD~1", help="the git ref to compare against")
    p.add_argument("--rounds", type=int, default=2, help="runs per side (alternating)")
    p.add_argument("--new", help="a git ref for the new side instead of the working tree")
    p.add_argument(
        "--same-script",
        action="store_true",
        help="both sides run the new side's script (each on its own code)",
    )
    p.add_argument("command", nargs="+", help="-- SCRIPT [ARGS...] (relative to the tree)")
    args = p.parse_args()
    script, *rest = args.command
    script = str(Path(script).resolve().relative_to(ROOT)) if Path(script).is_absolute() else script
    result = compare(script, rest, args.ref, args.rounds, args.new, args.same_script)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

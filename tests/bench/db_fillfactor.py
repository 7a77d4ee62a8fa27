"""PostgreSQL: the whole flush (tests/bench/db.py) with the schema changed for
heap-only updates, as JSON: the (busy, last_update) index dropped and/or a
fill factor on the three tables a flush updates, variants interleaved.

    .venv/bin/python tests/bench/db_fillfactor.py [--rounds 2] [--heartbeats 10000]

Each variant sets both on a fresh database after db.py's seeding (tables from
the models, i.e. revision 0003's schema: no index, fill factor 70) and
rewrites the tables: "0002 schema" puts the index back and resets the fill
factor.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]

import db as bench  # noqa: E402

TABLES = ("amphora_health", "healthmgr_amphora", "listener_statistics")
INDEX = "ix_amphora_health_busy_last_update"
VARIANTS = {
    "0002 schema": (False, None),
    "index dropped, fill factor 70 (0003 schema)": (True, 70),
    "fill factor 70": (False, 70),
    "index dropped": (True, None),
}


def _altering(seed_fleet: Any, drop: bool, fillfactor: int | None) -> Any:
    def make_fleet(engine: Any, n: int) -> Any:
        seeds = seed_fleet(engine, n)
        with engine.begin() as conn:
            if drop:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {INDEX}")
            else:
                conn.exec_driver_sql(
                    f"CREATE INDEX IF NOT EXISTS {INDEX} ON amphora_health (busy, last_update)"
                )
            for table in TABLES:
                if fillfactor:
                    conn.exec_driver_sql(f"ALTER TABLE {table} SET (fillfactor = {fillfactor})")
                else:
                    conn.exec_driver_sql(f"ALTER TABLE {table} RESET (fillfactor)")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"VACUUM FULL {table}")
        return seeds

    return make_fleet


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--heartbeats", type=int, default=10000)
    args = p.parse_args()
    seed_fleet = bench.make_fleet
    rows: dict[str, list[int]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            names = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                bench.make_fleet = _altering(seed_fleet, *VARIANTS[name])
                out = bench.bench_database("postgresql", args.heartbeats, 8, Path(tmp))
                rows[name].append(out["rows_per_second"])
    print(
        json.dumps(
            {"benchmark": "db_fillfactor", "heartbeats": args.heartbeats, "rows_per_second": rows},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PostgreSQL: what the (busy, last_update) index and the fill factor cost the
``amphora_health`` bumps, and what the health check's stale scan costs
without that index. Prints JSON.

Variants (each a fresh database with the real schema and N amphorae of the
fleet simulator's topology, one health row each), measured interleaved:

- ``index``: the schema before revision 0003 (every bump changes an indexed
  column, so no update is heap-only);
- ``no_index``: without that index, as since 0003, at fill factor 100;
- ``no_index_ffNN``: dropped, and the table's fill factor NN (room on each
  page for a heap-only update's new tuple).

Per round every amphora is bumped once with the flush's own statement (one
``INSERT ... SELECT FROM unnest ... ON CONFLICT`` per flush of ``--batch``
rows); then the health check's read (``claims.read_for_check``, nothing
stale: the common case) runs ``--scans`` times.

    .venv/bin/python tests/bench/health_rows.py [--amphorae 20000] [--batch 5000]
        [--rounds 5] [--fillfactors 90,70]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from healthmgr.chaos.fleet import Topology  # noqa: E402
from healthmgr.chaos.topology import insert_topology  # noqa: E402
from healthmgr.db import claims  # noqa: E402
from healthmgr.db.engine import make_engine  # noqa: E402
from healthmgr.db.flush import statements as _w  # noqa: E402
from healthmgr.db.migrate import upgrade  # noqa: E402
from healthmgr.rules.batch import HealthBump  # noqa: E402
from tests.conftest import fresh_database_url  # noqa: E402

INDEX = "ix_amphora_health_busy_last_update"


class Variant:
    def __init__(self, name: str, fillfactor: int | None, keep_index: bool, tmp: Path) -> None:
        self.name = name
        self.url, self.drop = fresh_database_url("postgresql", tmp)
        upgrade(self.url)
        self.engine = make_engine(self.url)
        with self.engine.begin() as conn:  # from revision 0003's schema (no index, 70)
            if keep_index:
                conn.exec_driver_sql(f"CREATE INDEX {INDEX} ON amphora_health (busy, last_update)")
            if fillfactor:
                conn.exec_driver_sql(f"ALTER TABLE amphora_health SET (fillfactor = {fillfactor})")
            else:
                conn.exec_driver_sql("ALTER TABLE amphora_health RESET (fillfactor)")
        self.flush_seconds: list[float] = []
        self.scan_seconds: list[float] = []

    def load(self, topology: Topology, at: dt.datetime) -> list[bytes]:
        insert_topology(self.engine, topology)
        ids = [a.id for a in topology.amphorae]
        self.bump(ids, at, len(ids))
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM FULL ANALYZE amphora_health")
        return ids

    def bump(self, ids: list[bytes], at: dt.datetime, batch: int) -> float:
        sql = _w.health_statement("postgresql").sql
        started = time.perf_counter()
        for start in range(0, len(ids), batch):
            _, params = _w.health_params(
                "postgresql", [HealthBump(i, at) for i in ids[start : start + batch]]
            )
            with self.engine.begin() as conn:
                conn.exec_driver_sql(sql, params)
        return time.perf_counter() - started

    def scan(self, now: dt.datetime) -> float:
        started = time.perf_counter()
        with self.engine.begin() as conn:
            read = claims.read_for_check(conn, now - dt.timedelta(seconds=60), now, 100)
        assert not read.silent
        return time.perf_counter() - started

    def table_stats(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            upd, hot = conn.exec_driver_sql(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = 'amphora_health'"
            ).one()
            size = conn.exec_driver_sql(
                "SELECT pg_table_size('amphora_health'), pg_indexes_size('amphora_health')"
            ).one()
        return {
            "updates": upd,
            "hot_fraction": round(hot / upd, 3) if upd else None,
            "table_mb": round(size[0] / 2**20, 1),
            "indexes_mb": round(size[1] / 2**20, 1),
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amphorae", type=int, default=20000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scans", type=int, default=5)
    p.add_argument("--fillfactors", default="90,70")
    args = p.parse_args()
    topology = Topology.generate(args.amphorae, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [("index", None, True), ("no_index", None, False)] + [
            (f"no_index_ff{f}", int(f), False) for f in args.fillfactors.split(",") if f
        ]
        variants = [Variant(name, ff, keep, Path(tmp)) for name, ff, keep in specs]
        try:
            return _run(variants, topology, args)
        finally:
            for v in variants:
                v.engine.dispose()
                v.drop()


def _run(variants: list[Variant], topology: Topology, args: argparse.Namespace) -> int:
    start = dt.datetime(2026, 1, 1)
    ids = next(v.load(topology, start) for v in variants)
    for v in variants:  # the stats since loading only
        with v.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_reset()")
    for index in range(args.rounds):
        at = start + dt.timedelta(seconds=index + 1)
        for v in variants if index % 2 == 0 else reversed(variants):
            v.flush_seconds.append(v.bump(ids, at, args.batch))
            v.scan_seconds += [v.scan(at) for _ in range(args.scans)]
    time.sleep(1)  # the statistics collector
    base = statistics.median(variants[0].flush_seconds)
    out = {
        "benchmark": "health_rows",
        "amphorae": args.amphorae,
        "batch": args.batch,
        "rounds": args.rounds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "variants": [
            {
                "name": v.name,
                "bump_rows_per_s": round(args.amphorae / statistics.median(v.flush_seconds)),
                "bump_time_ratio_to_index": round(statistics.median(v.flush_seconds) / base, 3),
                "check_read_ms_median": round(1000 * statistics.median(v.scan_seconds), 1),
                **v.table_stats(),
            }
            for v in variants
        ],
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the batched data layer on SQLite, PostgreSQL and MariaDB.

For each database: create a fresh one, seed N load balancers (seed topology:
1 listener, 1 pool, 2 members, 1 amphora), then flush batches worth N
heartbeats (N health bumps + N listener statistics updates + a few hundred
status changes) and report, as JSON, rows per second, the flush time, and
the SQL statements one flush issues (counted by a ``before_cursor_execute``
listener: an executemany counts once). Also: loading N topologies.

    .venv/bin/python tests/bench/db.py [--heartbeats 10000] [--rounds 5]
                                       [--databases sqlite,postgresql,mysql]

Databases are created and dropped as the test fixtures do (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository

import datetime as dt

from healthmgr.db.store import Store
from healthmgr.rules import constants as C
from healthmgr.rules import status
from healthmgr.rules.batch import FlushBatch, HealthBump, ReportWrite, StatsUpdate, StatusWrite
from tests.conftest import fresh_database_url
from tests.db.factories import SeedIds, make_fleet, make_test_engine, utcnow


class StatementCounter:
    """Counts DBAPI executions on an engine (BEGIN/COMMIT excluded) and
    the time spent inside them (driver + database)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        self.executemany = 0
        self.seconds = 0.0
        self._started = 0.0
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, params, context, executemany) -> None:
        self._started = time.perf_counter()
        if statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")):
            return
        self.count += 1
        self.executemany += bool(executemany)

    def _after(self, conn, cursor, statement, params, context, executemany) -> None:
        self.seconds += time.perf_counter() - self._started

    def reset(self) -> None:
        self.count = self.executemany = 0
        self.seconds = 0.0


def make_batch(seeds: list[SeedIds], seq: int, status_changes: int) -> FlushBatch:
    now = utcnow()
    health = tuple(HealthBump(s.amphora, now) for s in seeds)
    stats = tuple(
        StatsUpdate(s.listener, s.amphora, seq, 1, 5, 1500 * seq, 9000 * seq, 3 * seq, 0)
        for s in seeds
    )
    # Every amphora reports (its newest heartbeat); in a few a member goes down
    # and up again: ERROR <-> ONLINE, with pool and LB. Only those write statuses.
    flip = seq % 2 == 1
    changed = {s.amphora for s in seeds[: status_changes // 3]}
    reports = tuple(_report(s, seq, flip and s.amphora in changed, now) for s in seeds)
    return FlushBatch(health=health, reports=reports, stats=stats)


def _report(seed: SeedIds, seq: int, down: bool, now: dt.datetime) -> ReportWrite:
    degraded = C.DEGRADED if down else C.ONLINE
    determined = (
        StatusWrite("load_balancer", seed.load_balancer, degraded),
        StatusWrite("listener", seed.listener, C.ONLINE),
        StatusWrite("pool", seed.pool, degraded),
        *(
            StatusWrite("member", m, C.ERROR if down and i == 1 else C.ONLINE)
            for i, m in enumerate(seed.members)
        ),
    )
    return ReportWrite(seed.amphora, seq, status.digest(determined), determined, now, True, True)


def bench_database(dialect: str, heartbeats: int, rounds: int, tmp: Path) -> dict[str, Any]:
    url, drop = fresh_database_url(dialect, tmp)
    try:
        engine = make_test_engine(url)
        try:
            return _run(engine, heartbeats, rounds)
        finally:
            engine.dispose()
    finally:
        drop()


def _run(engine: sa.Engine, heartbeats: int, rounds: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    seeds = make_fleet(engine, heartbeats)
    seed_seconds = time.perf_counter() - t0
    store = Store(engine)
    counter = StatementCounter(engine)

    counter.reset()
    t0 = time.perf_counter()
    topologies = store.load_topologies([s.amphora for s in seeds]).found
    load_seconds = time.perf_counter() - t0
    assert len(topologies) == heartbeats
    load_statements = counter.count

    # First flush inserts the listener_statistics rows; later ones update.
    first = make_batch(seeds, 1, 300)
    counter.reset()
    t0 = time.perf_counter()
    first_stats = store.flush(first)
    first_seconds = time.perf_counter() - t0
    first_statements = counter.count

    times, statements, in_statements = [], [], []
    for seq in range(2, rounds + 2):
        batch = make_batch(seeds, seq, 300)
        counter.reset()
        t0 = time.perf_counter()
        result = store.flush(batch)
        times.append(time.perf_counter() - t0)
        statements.append(counter.count)
        in_statements.append(counter.seconds)
    median = statistics.median(times)
    rows = len(first)
    return {
        "heartbeats": heartbeats,
        "batch_rows": rows,
        "batch": {
            "health_bumps": len(first.health),
            "stats_updates": len(first.stats),
            "reports": len(first.reports),
            "status_writes_first": first_stats.status_rows,
        },
        "statements_per_flush": statements[-1],
        "statements_first_flush": first_statements,
        "store_counted_statements": result.statements,
        "flush_seconds_median": round(median, 4),
        "flush_seconds_min": round(min(times), 4),
        "flush_seconds_max": round(max(times), 4),
        # Inside cursor.execute/executemany (driver and database); the rest of
        # a flush is Python (building parameters) and COMMIT.
        "statement_seconds_median": round(statistics.median(in_statements), 4),
        "rows_per_second": round(rows / median),
        "heartbeats_per_second": round(heartbeats / median),
        "first_flush_seconds": round(first_seconds, 4),
        "first_flush_statements_store": first_stats.statements,
        "load_topologies_seconds": round(load_seconds, 4),
        "load_topologies_statements": load_statements,
        "seed_seconds": round(seed_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heartbeats", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--databases", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "benchmark": "db",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "results": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in args.databases.split(","):
            out["results"][dialect] = bench_database(
                dialect, args.heartbeats, args.rounds, Path(tmp)
            )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

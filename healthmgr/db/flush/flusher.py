"""One flush: a batch of the view's decisions written in one transaction.

Order inside the transaction (the same in every manager, so two managers
flushing at once wait for each other instead of deadlocking): amphora_health,
amphora (FAILOVER_STOPPED -> ALLOCATED), healthmgr_amphora (locked, then
moved), the statuses (children first), listener_statistics.

A row the database refuses never blocks the others: values it cannot hold
are split off before writing (:func:`writes.valid_parts`), and when the
database still refuses the batch for its data (not for a lost connection or
a lock), the batch is bisected by amphora, then row by row, until the
refused rows are isolated; the rest lands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from healthmgr.db import models
from healthmgr.db.dbtime import utcnow
from healthmgr.db.errors import diagnose, is_transient
from healthmgr.db.flush import statements as _w
from healthmgr.db.flush.octavia_stats import OctaviaStatsWriter
from healthmgr.db.in_lists import JSON_EACH_SQL, chunks, in_lists, json_ids, one_of
from healthmgr.db.models import Amphora
from healthmgr.db.octavia_schema import NATIVE, OCTAVIA
from healthmgr.rules import constants as C
from healthmgr.rules.batch import FlushBatch, RefusedRow, ReportWrite
from healthmgr.wire.ids import Id, id_bytes, id_str

# IN-list size for the FAILOVER_STOPPED check and the report lock: one
# statement for 10,000 rows, under SQLite's 32,766 and MariaDB's limits.
IN_CHUNK = 10_000
_amp = Amphora


@dataclass(frozen=True, slots=True)
class FlushStats:
    """What one flush did."""

    health_rows: int = 0  # amphora_health rows upserted (one per amphora)
    reports_won: int = 0  # reports that were the newest any manager processed
    status_rows: int = 0  # status writes issued (the reports that changed the outcome)
    stats_rows: int = 0  # statistics updates applied or ignored as old
    statements: int = 0  # SQL statements executed (an executemany counts once)
    recovered: tuple[Id, ...] = ()  # FAILOVER_STOPPED -> ALLOCATED
    refused: tuple[RefusedRow, ...] = ()  # rows the database refused (quarantined)
    attempts: int = 1  # transactions (>1 after a deadlock retry or an isolation)
    seconds: float = 0.0

    def plus(self, other: FlushStats) -> FlushStats:
        return FlushStats(
            self.health_rows + other.health_rows,
            self.reports_won + other.reports_won,
            self.status_rows + other.status_rows,
            self.stats_rows + other.stats_rows,
            self.statements + other.statements,
            self.recovered + other.recovered,
            self.refused + other.refused,
            self.attempts + other.attempts,
            self.seconds + other.seconds,
        )


@dataclass
class _Counter:
    n: int = 0
    recovered: list[Id] = field(default_factory=list)
    won: int = 0
    status_rows: int = 0

    def run(self, conn: sa.Connection, stmt: Any, params: Any = None) -> sa.CursorResult:
        self.n += 1
        return conn.execute(stmt, params) if params is not None else conn.execute(stmt)

    def driver(self, conn: sa.Connection, sql: str, params: Any) -> sa.CursorResult:
        """SQL text straight to the driver: a list of rows is one executemany."""
        self.n += 1
        return conn.exec_driver_sql(sql, params)


Transaction = Callable[[Callable[[sa.Connection], Any]], tuple[Any, int]]


class Flusher:
    """The statements of a flush for one dialect, built once."""

    def __init__(self, dialect: str, manager_id: str, schema: str = NATIVE) -> None:
        self.dialect = dialect
        self.manager_id = manager_id
        self._health_sql = _w.health_statement(dialect)
        self._report_sql = _w.report_statement(dialect)
        self._stats_sql = _w.stats_statement(dialect, delta=False)
        self._delta_sql = _w.stats_statement(dialect, delta=True)
        # Octavia's database: statistics split between its table and ours, and
        # status writes stamp updated_at as Octavia's repositories do.
        self._octavia_stats = OctaviaStatsWriter(dialect) if schema == OCTAVIA else None
        # Built once: SQLAlchemy caches their compiled form.
        self._status_update = {
            t: _w.status_update(models.metadata.tables[t], stamp=schema == OCTAVIA)
            for t in _w.STATUS_TABLE_ORDER
        }

    def flush(self, batch: FlushBatch, transaction: Transaction) -> FlushStats:
        """Write ``batch``; refused rows are isolated and reported, never raised.

        Raises only what is worth retrying later: a lost connection, a lock or
        statement timeout, a deadlock (the caller keeps the batch).
        """
        try:
            return self._flush(batch, transaction)
        finally:
            _w.forget_texts()  # the ids' texts live for one flush (statements.text_id)

    def _flush(self, batch: FlushBatch, transaction: Transaction) -> FlushStats:
        started = time.perf_counter()
        reports, stats, refused = _w.valid_parts(batch.reports, batch.stats)
        clean = FlushBatch(batch.health, tuple(reports), tuple(stats))
        try:
            result = self._once(clean, transaction)
        except exc.DBAPIError as error:
            if is_transient(error):
                raise
            result = self._isolate(_by_amphora(clean), transaction, FlushStats(attempts=1))
            if not result.statements and result.refused and diagnose(error).reason == "unknown":
                raise  # every row refused for an unknown reason: not the rows, retry later
        result = result.plus(FlushStats(refused=tuple(refused), attempts=0))
        return replace(result, seconds=time.perf_counter() - started)

    # -- one transaction -----------------------------------------------------

    def _once(self, batch: FlushBatch, transaction: Transaction) -> FlushStats:
        dialect = self.dialect
        health_ids, health = _w.health_params(dialect, batch.health)
        now = utcnow()
        absolute = [s for s in batch.stats if not s.is_delta]
        deltas = [s for s in batch.stats if s.is_delta]
        octavia_stats = self._octavia_stats
        stats_work = (
            []
            if octavia_stats
            else [
                (statement, _w.stats_params(dialect, part, now))
                for statement, updates in ((self._stats_sql, absolute), (self._delta_sql, deltas))
                if updates
                for part in _w.stats_rounds(updates)
            ]
        )

        def work(conn: sa.Connection) -> _Counter:
            counter = _Counter()
            if health_ids:
                counter.driver(conn, self._health_sql.sql, health)
                counter.recovered = self._recover(conn, counter, health_ids)
            if batch.reports:
                changed = self._reports(conn, counter, batch.reports)
                for table, rows in _w.status_groups(changed):
                    counter.run(conn, self._status_update[table], rows)
                    counter.status_rows += len(rows)
            for statement, params in stats_work:
                counter.driver(conn, statement.sql, params)
            if octavia_stats and batch.stats:
                octavia_stats.write(conn, batch.stats, now, counter.driver)
            return counter

        counter, attempts = transaction(work)
        return FlushStats(
            health_rows=len(health_ids),
            reports_won=counter.won,
            status_rows=counter.status_rows,
            stats_rows=len(batch.stats),
            statements=counter.n,
            recovered=tuple(counter.recovered),
            attempts=attempts,
        )

    def _reports(
        self, conn: sa.Connection, counter: _Counter, reports: Sequence[ReportWrite]
    ) -> list[ReportWrite]:
        """Move the report rows this batch holds the newest of; return those whose
        statuses the database does not show yet."""
        held = self._lock_reports(conn, counter, [r.amphora_id for r in reports])
        newer = [r for r in reports if r.order > held.get(r.amphora_id, (-1, 0))[0]]
        if not newer:
            return []
        params = _w.report_params(self.dialect, newer, self.manager_id)
        counter.driver(conn, self._report_sql.sql, params)
        absent = [r.amphora_id for r in newer if r.amphora_id not in held]
        if absent:
            # Rows another manager may have inserted meanwhile (nothing to lock
            # before): ours only if they now carry our order.
            now_held = self._lock_reports(conn, counter, absent)
            newer = [
                r
                for r in newer
                if r.amphora_id in held or now_held.get(r.amphora_id, (None,))[0] == r.order
            ]
        counter.won += len(newer)
        return [
            r for r in newer if r.cache_differs or held.get(r.amphora_id, (0, None))[1] != r.digest
        ]

    def _lock_reports(
        self, conn: sa.Connection, counter: _Counter, ids: Sequence[Id]
    ) -> dict[Id, tuple[int, int]]:
        raw_of = {_w.text_id(i): i for i in ids}  # the rows' text back to our ids
        out: dict[Id, tuple[int, int]] = {}
        sqlite = self.dialect == "sqlite"
        for part in (chunks if sqlite else in_lists)(sorted(raw_of), IN_CHUNK):
            sql = _w.report_lock_sql(self.dialect, len(part))
            params: Any = tuple(part)
            if self.dialect == "postgresql":
                params = {"ids": _w.pg_array(part)}
            elif sqlite:
                params = (json_ids(part),)
            for amp, order, digest in counter.driver(conn, sql, params):
                raw = raw_of.get(amp)
                out[raw if raw is not None else id_bytes(amp)] = (int(order), int(digest))
        return out

    def _recover(self, conn: sa.Connection, counter: _Counter, ids: list[str]) -> list[Id]:
        """Bumped amphorae in FAILOVER_STOPPED go back to ALLOCATED."""
        stopped: list[str] = []
        where = f"status = '{C.FAILOVER_STOPPED}' AND id"
        if self.dialect == "postgresql":
            sql = f"SELECT id FROM amphora WHERE {where} = ANY(%(ids)s::varchar[])"
            stopped = [row[0] for row in counter.driver(conn, sql, {"ids": _w.pg_array(ids)})]
        elif self.dialect == "sqlite":
            sql = f"SELECT id FROM amphora WHERE {where} IN ({JSON_EACH_SQL})"
            for part in chunks(ids, IN_CHUNK):
                stopped += [row[0] for row in counter.driver(conn, sql, (json_ids(part),))]
        else:
            for part in in_lists(ids, IN_CHUNK):
                marks = ", ".join("%s" for _ in part)
                sql = f"SELECT id FROM amphora WHERE {where} IN ({marks})"
                stopped += [row[0] for row in counter.driver(conn, sql, tuple(part))]
        if stopped:
            counter.run(
                conn,
                sa.update(_amp)
                .where(one_of(_amp.c.id, stopped, self.dialect, IN_CHUNK))
                .where(_amp.c.status == C.FAILOVER_STOPPED)
                .values(status=C.ALLOCATED, updated_at=utcnow()),
            )
        return [id_bytes(i) for i in sorted(stopped)]

    # -- isolating refused rows -------------------------------------------------

    def _isolate(
        self, groups: list[FlushBatch], transaction: Transaction, done: FlushStats
    ) -> FlushStats:
        """Bisect ``groups`` (one per amphora) until the refused rows stand alone."""
        if len(groups) == 1:
            return self._rows_alone(groups[0], transaction, done)
        mid = len(groups) // 2
        for half in (groups[:mid], groups[mid:]):
            try:
                done = done.plus(self._once(_merge(half), transaction))
            except exc.DBAPIError as error:
                if is_transient(error):
                    raise
                done = self._isolate(half, transaction, done)
        return done

    def _rows_alone(
        self, group: FlushBatch, transaction: Transaction, done: FlushStats
    ) -> FlushStats:
        for row in _rows(group):
            try:
                done = done.plus(self._once(row, transaction))
            except exc.DBAPIError as error:
                if is_transient(error):
                    raise
                done = done.plus(FlushStats(refused=(_refused(row, error),), attempts=1))
        return done


def _by_amphora(batch: FlushBatch) -> list[FlushBatch]:
    groups: dict[Id, dict[str, list[Any]]] = {}

    def of(amp: Id) -> dict[str, list[Any]]:
        return groups.setdefault(amp, {"health": [], "reports": [], "stats": []})

    for bump in batch.health:
        of(bump.amphora_id)["health"].append(bump)
    for report in batch.reports:
        of(report.amphora_id)["reports"].append(report)
    for update in batch.stats:
        of(update.amphora_id)["stats"].append(update)
    return [
        FlushBatch(tuple(g["health"]), tuple(g["reports"]), tuple(g["stats"]))
        for _, g in sorted(groups.items())
    ]


def _merge(batches: Sequence[FlushBatch]) -> FlushBatch:
    return FlushBatch(
        tuple(b for batch in batches for b in batch.health),
        tuple(r for batch in batches for r in batch.reports),
        tuple(s for batch in batches for s in batch.stats),
    )


def _rows(group: FlushBatch) -> list[FlushBatch]:
    """Each row of one amphora's group as a batch of its own (stats in seq order)."""
    return (
        [FlushBatch(health=(b,)) for b in group.health]
        + [FlushBatch(reports=(r,)) for r in group.reports]
        + [FlushBatch(stats=(s,)) for s in sorted(group.stats, key=lambda s: s.seq)]
    )


def _refused(row: FlushBatch, error: exc.DBAPIError) -> RefusedRow:
    kind = diagnose(error)
    detail = " ".join(str(error.orig).split())[:300]
    if row.health:
        amp = id_str(row.health[0].amphora_id)
        return RefusedRow("amphora_health", amp, amp, kind.reason, detail)
    if row.reports:
        amp = id_str(row.reports[0].amphora_id)
        return RefusedRow("healthmgr_amphora", amp, amp, kind.reason, detail)
    update = row.stats[0]
    return RefusedRow(
        "listener_statistics", _w.stats_key(update), id_str(update.amphora_id), kind.reason, detail
    )

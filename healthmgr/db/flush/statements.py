"""The statements of one flush: one statement per kind, whatever the batch size.

The two big kinds (``amphora_health`` bumps and ``listener_statistics``
updates, one row per amphora and per listener) are SQL text per dialect run
with ``exec_driver_sql``: for 10,000 rows SQLAlchemy's per-row parameter
processing cost more than the database itself. PostgreSQL gets all rows in
one statement as arrays (``INSERT ... SELECT FROM unnest(...)``), each
array one text literal (:func:`pg_array`); SQLite
and MariaDB get one executemany (PyMySQL turns it into multi-row INSERTs).
Status writes (few, only changes) are Core UPDATEs.

Rows are coalesced and sorted by key: the same lock order in every manager,
so two managers flushing at once wait for each other instead of deadlocking.

Semantics, the same on every dialect:

- health: ``last_update`` only moves forward (GREATEST / MAX); ``busy`` is
  False on insert and never touched by an update;
- reports (``healthmgr_amphora``): a row moves only to a newer
  ``report_order``; the flush locks the rows first (``FOR UPDATE``; SQLite's
  BEGIN IMMEDIATE), so it knows which of its reports are the newest any
  manager processed and which of those determine other statuses than the
  database holds: only those write statuses;
- stats (absolute counters): applied only when ``seq`` is newer than the
  row's ``last_seq``, adding ``value - last_value`` under the same epoch, or
  ``value`` after an epoch change or when a counter went backwards (a reset);
  the comparison happens in the database, so several managers sharing one
  amphora's heartbeats count every byte once. A new row counts the full
  value (HAProxy's counters since it started). Updates of one row within a
  batch are applied in ``seq`` order;
- stats (deltas, Octavia v3): added whatever their order; ``last_seq`` and
  ``active_connections`` follow the newest;
- every total saturates at 2**63-1 (the BIGINT maximum) instead of
  overflowing: the database never refuses a sum, and one amphora's absurd
  counters spoil only its own statistics (schema/heartbeat.md, "Counters at
  the edge").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from healthmgr.db.in_lists import JSON_EACH_SQL
from healthmgr.rules import constants as C
from healthmgr.rules.batch import (
    STATUS_TABLES,
    HealthBump,
    RefusedRow,
    ReportWrite,
    StatsUpdate,
    StatusWrite,
    unpack_statuses,
)
from healthmgr.wire.ids import Id, id_str

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")
MAX_COUNTER = 2**63 - 1  # BIGINT
# Lock order for status writes (children first), the same in every manager.
STATUS_TABLE_ORDER = ("member", "pool", "listener", "load_balancer")
DIALECTS = ("sqlite", "postgresql", "mysql")

_Row = dict[str, Any]


def sqlite_time(value: dt.datetime) -> str:
    # SQLAlchemy's storage format for SQLite DATETIME: fixed width, so text
    # order is time order (MAX() compares text).
    return value.isoformat(" ", "microseconds")


def sqlite_times(values: Iterable[dt.datetime]) -> list[str]:
    """``sqlite_time`` of each; heartbeats of one millisecond share one conversion."""
    memo: dict[dt.datetime, str] = {}
    out = []
    for value in values:
        text = memo.get(value)
        if text is None:
            text = memo[value] = sqlite_time(value)
        out.append(text)
    return out


# PostgreSQL gets each column as one array literal in one text parameter
# (``'{a,b,c}'::varchar[]``): psycopg dumps a Python list element by element
# in Python, which took a third of the daemon's CPU per seed heartbeat
# (py-spy at 5,000/s). Ids and integers need no quoting in the literal.


def pg_array(values: Iterable[str | int]) -> str:
    """An array literal of ids or integers, for ``%s::varchar[]`` / ``::bigint[]``."""
    return "{" + ",".join(map(str, values)) + "}"


def pg_times(values: Iterable[dt.datetime | None]) -> str:
    """An array literal of naive timestamps (``::timestamp[]``); None is NULL.
    Heartbeats of one millisecond share one conversion."""
    memo: dict[dt.datetime | None, str] = {None: "NULL"}
    out = []
    for value in values:
        text = memo.get(value)
        if text is None:
            text = memo[value] = value.isoformat("T", "microseconds")  # type: ignore[union-attr]
        out.append(text)
    return pg_array(out)


def pg_bools(values: Iterable[bool]) -> str:
    return pg_array("t" if v else "f" for v in values)


# The text of each amphora and listener id, converted once per flush instead
# of at each of its uses (five per seed heartbeat were a tenth of a SQLite
# flush). Not kept between flushes: for the manager's life it held about 275
# bytes per seed amphora (a 36-character str, its key and a slot per id) for
# about 1 µs of conversions per heartbeat (docs/performance.md, "Memory of
# the daemon").
_texts: dict[Id, str] = {}


def text_id(raw: Id) -> str:
    """``id_str(raw)``, cached until :func:`forget_texts`."""
    text = _texts.get(raw)
    if text is None:
        text = _texts[raw] = id_str(raw)
    return text


def forget_texts() -> None:
    """End of a flush: the texts it converted are dropped."""
    _texts.clear()


# --- validation -------------------------------------------------------------


def status_problem(w: StatusWrite) -> str | None:
    """Why the database cannot take this write, or None."""
    if w.table not in STATUS_TABLES:
        return f"StatusWrite.table {w.table!r} is not one of {STATUS_TABLES}"
    if w.operating_status not in C.OPERATING_STATUSES:
        return (
            f"StatusWrite.operating_status {w.operating_status!r} for {w.table} "
            f"{id_str(w.id)} is not one of {C.OPERATING_STATUSES}"
        )
    return None


_CHECKED = (*COUNTERS, "active_connections", "seq", "epoch")


def stats_problem(s: StatsUpdate) -> str | None:
    """Why the database cannot take this update (BIGINT columns), or None."""
    values = (
        s.bytes_in,
        s.bytes_out,
        s.total_connections,
        s.request_errors,
        s.active_connections,
        s.seq,
        s.epoch,
    )
    if min(values) >= 0 and max(values) <= MAX_COUNTER:
        return None  # the common case, checked fast
    for name in _CHECKED:
        value = getattr(s, name)
        if not 0 <= value <= MAX_COUNTER:
            return (
                f"StatsUpdate.{name}={value} for listener {id_str(s.listener_id)} "
                f"on amphora {id_str(s.amphora_id)} is outside 0..2**63-1"
            )
    return None


def report_problem(r: ReportWrite) -> str | None:
    if not 0 <= r.order <= MAX_COUNTER:
        return f"report order {r.order} of amphora {id_str(r.amphora_id)} is outside 0..2**63-1"
    if type(r.statuses) is bytes:
        return None  # packed: every table and status has its code, so both are known
    for w in r.statuses:
        problem = status_problem(w)
        if problem:
            return problem
    return None


def stats_key(s: StatsUpdate) -> str:
    return f"{id_str(s.listener_id)}/{id_str(s.amphora_id)}"


def valid_parts(
    reports: Iterable[ReportWrite], stats: Iterable[StatsUpdate]
) -> tuple[list[ReportWrite], list[StatsUpdate], list[RefusedRow]]:
    """Split off what the database would refuse, checked before writing."""
    ok_reports: list[ReportWrite] = []
    ok_stats: list[StatsUpdate] = []
    refused: list[RefusedRow] = []
    for r in reports:
        problem = report_problem(r)
        if problem:
            amp = id_str(r.amphora_id)
            refused.append(RefusedRow("healthmgr_amphora", amp, amp, "out_of_range", problem))
        else:
            ok_reports.append(r)
    for u in stats:
        problem = stats_problem(u)
        if problem:
            refused.append(
                RefusedRow(
                    "listener_statistics",
                    stats_key(u),
                    id_str(u.amphora_id),
                    "out_of_range",
                    problem,
                )
            )
        else:
            ok_stats.append(u)
    return ok_reports, ok_stats, refused


# --- statements -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL text and whether it takes a list of rows (executemany) or arrays."""

    sql: str
    arrays: bool  # PostgreSQL: one execute with one array per column


Col = Callable[[str], str]  # column name -> SQL naming the old or the new value


def saturating_add(total: str, delta: str) -> str:
    """``total + delta`` (both >= 0), at most MAX_COUNTER: never overflows BIGINT.

    ``MAX - total`` cannot overflow, and the sum is computed only when it fits.
    """
    top = MAX_COUNTER
    return f"CASE WHEN {delta} > {top} - {total} THEN {top} ELSE {total} + {delta} END"


def _accumulate(col: str, old: Col, new: Col) -> str:
    """``old.col + delta`` (saturating) where the delta comes from absolute counters."""
    value, last = new(f"last_{col}"), old(f"last_{col}")
    delta = (
        f"(CASE WHEN {old('counters_epoch')} = {new('counters_epoch')} "
        f"AND {value} >= {last} THEN {value} - {last} ELSE {value} END)"
    )
    return saturating_add(old(col), delta)


def _absolute_sets(old: Col, new: Col) -> list[tuple[str, str]]:
    """Assignments of an absolute update (without last_seq), in the order MariaDB needs.

    MariaDB/MySQL evaluate SET left to right with already-updated values, so
    the accumulators come before the ``last_*`` and ``counters_epoch`` they
    read. PostgreSQL and SQLite read the old row throughout.
    """
    sets = [(c, _accumulate(c, old, new)) for c in COUNTERS]
    sets += [(f"last_{c}", new(f"last_{c}")) for c in COUNTERS]
    sets += [(c, new(c)) for c in ("counters_epoch", "active_connections", "updated_at")]
    return sets


def _delta_sets(old: Col, new: Col) -> list[tuple[str, str]]:
    """Assignments of a delta update (without last_seq)."""
    sets = [(c, saturating_add(old(c), new(c))) for c in COUNTERS]
    newer = f"{old('last_seq')} < {new('last_seq')}"
    sets.append(
        (
            "active_connections",
            f"CASE WHEN {newer} THEN {new('active_connections')} "
            f"ELSE {old('active_connections')} END",
        )
    )
    sets.append(("updated_at", new("updated_at")))
    return sets


STATS_COLUMNS = (
    "listener_id",
    "amphora_id",
    *COUNTERS,
    "active_connections",
    "counters_epoch",
    "last_seq",
    *(f"last_{c}" for c in COUNTERS),
    "updated_at",
)
_KEY = "(listener_id, amphora_id)"


def health_statement(dialect: str) -> Statement:
    if dialect == "sqlite":
        return Statement(
            "INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES (?, ?, 0) "
            "ON CONFLICT (amphora_id) DO UPDATE SET "
            "last_update = max(amphora_health.last_update, excluded.last_update)",
            arrays=False,
        )
    if dialect == "mysql":
        # Placeholders only in VALUES: PyMySQL then sends multi-row INSERTs.
        return Statement(
            "INSERT INTO amphora_health (amphora_id, last_update, busy) VALUES (%s, %s, %s) "
            "ON DUPLICATE KEY UPDATE last_update = GREATEST(last_update, VALUES(last_update))",
            arrays=False,
        )
    if dialect == "postgresql":
        return Statement(
            "INSERT INTO amphora_health (amphora_id, last_update, busy) "
            "SELECT u.id, u.ts, false "
            "FROM unnest(%(ids)s::varchar[], %(ts)s::timestamp[]) AS u(id, ts) "
            "ON CONFLICT (amphora_id) DO UPDATE SET "
            "last_update = GREATEST(amphora_health.last_update, EXCLUDED.last_update)",
            arrays=True,
        )
    raise ValueError(f"unsupported database dialect {dialect!r}")


def stats_statement(dialect: str, *, delta: bool) -> Statement:
    columns = ", ".join(STATS_COLUMNS)
    if dialect in ("sqlite", "postgresql"):
        prefix = "excluded." if dialect == "sqlite" else "EXCLUDED."

        def old(c: str) -> str:
            return f"listener_statistics.{c}"

        def new(c: str) -> str:
            return prefix + c

        greatest = "max" if dialect == "sqlite" else "GREATEST"
        if delta:
            sets = _delta_sets(old, new)
            sets.append(("last_seq", f"{greatest}({old('last_seq')}, {new('last_seq')})"))
            where = ""
        else:
            sets = _absolute_sets(old, new)
            sets.append(("last_seq", new("last_seq")))
            where = f" WHERE {old('last_seq')} < {new('last_seq')}"
        update = ", ".join(f"{col} = {expr}" for col, expr in sets)
        if dialect == "sqlite":
            values = "VALUES (" + ", ".join("?" for _ in STATS_COLUMNS) + ")"
        else:
            values = (
                "SELECT u.l, u.a, u.bi, u.bo, u.tc, u.re, u.ac, u.ep, u.sq, "
                + ("0, 0, 0, 0" if delta else "u.bi, u.bo, u.tc, u.re")
                + ", %(now)s::timestamp FROM unnest(%(l)s::varchar[], %(a)s::varchar[], "
                "%(bi)s::bigint[], %(bo)s::bigint[], %(tc)s::bigint[], %(re)s::bigint[], "
                "%(ac)s::bigint[], %(ep)s::bigint[], %(sq)s::bigint[]) "
                "AS u(l, a, bi, bo, tc, re, ac, ep, sq)"
            )
        return Statement(
            f"INSERT INTO listener_statistics ({columns}) {values} "
            f"ON CONFLICT {_KEY} DO UPDATE SET {update}{where}",
            arrays=dialect == "postgresql",
        )
    if dialect == "mysql":

        def current(c: str) -> str:
            return c

        def inserted(c: str) -> str:
            return f"VALUES({c})"  # the value the INSERT would have written

        if delta:
            sets = _delta_sets(current, inserted)
        else:
            # No WHERE on ON DUPLICATE KEY UPDATE: each assignment is guarded
            # by the seq test instead, and last_seq comes last so that the
            # test sees the old value throughout.
            newer = "last_seq < VALUES(last_seq)"
            sets = [
                (col, f"IF({newer}, {expr}, {col})")
                for col, expr in _absolute_sets(current, inserted)
            ]
        sets.append(("last_seq", "GREATEST(last_seq, VALUES(last_seq))"))
        update = ", ".join(f"{col} = {expr}" for col, expr in sets)
        placeholders = ", ".join("%s" for _ in STATS_COLUMNS)
        return Statement(
            f"INSERT INTO listener_statistics ({columns}) VALUES ({placeholders}) "
            f"ON DUPLICATE KEY UPDATE {update}",
            arrays=False,
        )
    raise ValueError(f"unsupported database dialect {dialect!r}")


# --- parameters -------------------------------------------------------------


def health_params(dialect: str, bumps: Iterable[HealthBump]) -> tuple[list[str], Any]:
    """(amphora ids, driver parameters): one row per amphora (the newest bump), by id."""
    newest: dict[bytes, dt.datetime] = {}
    for b in bumps:
        seen = newest.get(b.amphora_id)
        if seen is None or b.last_update > seen:
            newest[b.amphora_id] = b.last_update
    keys = sorted(newest)
    ids = [text_id(k) for k in keys]
    times = [newest[k] for k in keys]
    if dialect == "postgresql":
        return ids, {"ids": pg_array(ids), "ts": pg_times(times)}
    if dialect == "sqlite":
        return ids, list(zip(ids, sqlite_times(times), strict=True))
    return ids, [(i, t, False) for i, t in zip(ids, times, strict=True)]


def stats_rounds(updates: Iterable[StatsUpdate]) -> list[list[StatsUpdate]]:
    """Rounds with at most one update per row, in seq order: round i holds
    the i-th oldest update of each row (one round when the writer coalesced).
    PostgreSQL cannot update one row twice in one statement; the rounds
    also give every dialect the seq order."""
    ordered = sorted(updates, key=lambda u: (u.listener_id, u.amphora_id, u.seq))
    rounds: list[list[StatsUpdate]] = []
    previous: tuple[bytes, bytes] | None = None
    depth = 0
    for u in ordered:
        key = (u.listener_id, u.amphora_id)
        depth = depth + 1 if key == previous else 0
        previous = key
        if depth == len(rounds):
            rounds.append([])
        rounds[depth].append(u)
    return rounds


def stats_params(dialect: str, updates: Sequence[StatsUpdate], now: dt.datetime) -> Any:
    if dialect == "postgresql":
        return {
            "l": pg_array(text_id(s.listener_id) for s in updates),
            "a": pg_array(text_id(s.amphora_id) for s in updates),
            "bi": pg_array(s.bytes_in for s in updates),
            "bo": pg_array(s.bytes_out for s in updates),
            "tc": pg_array(s.total_connections for s in updates),
            "re": pg_array(s.request_errors for s in updates),
            "ac": pg_array(s.active_connections for s in updates),
            "ep": pg_array(s.epoch for s in updates),
            "sq": pg_array(s.seq for s in updates),
            "now": now,
        }
    stamp: Any = sqlite_time(now) if dialect == "sqlite" else now
    rows = []
    for s in updates:
        counters = (s.bytes_in, s.bytes_out, s.total_connections, s.request_errors)
        last = (0, 0, 0, 0) if s.is_delta else counters
        rows.append(
            (
                text_id(s.listener_id),
                text_id(s.amphora_id),
                *counters,
                s.active_connections,
                s.epoch,
                s.seq,
                *last,
                stamp,
            )
        )
    return rows


# --- reports and the status writes they carry ----------------------------------

REPORT_COLUMNS = (
    "amphora_id",
    "report_order",
    "report_digest",
    "observed_by",
    "observed_at",
    "healthy",
    "native_since",
)


def report_lock_sql(dialect: str, count: int) -> str:
    """Read (and lock, on the servers) the report rows of ``count`` amphorae, by id."""
    base = "SELECT amphora_id, report_order, report_digest FROM healthmgr_amphora WHERE "
    if dialect == "postgresql":
        return base + "amphora_id = ANY(%(ids)s::varchar[]) ORDER BY amphora_id FOR UPDATE"
    if dialect == "sqlite":  # one JSON parameter: see healthmgr.db.in_lists
        return base + f"amphora_id IN ({JSON_EACH_SQL}) ORDER BY amphora_id"
    where = f"amphora_id IN ({', '.join('%s' for _ in range(count))}) ORDER BY amphora_id"
    return base + where + " FOR UPDATE"


def report_statement(dialect: str) -> Statement:
    """Upsert of report rows; a row only ever moves to a newer report_order."""
    columns = ", ".join(REPORT_COLUMNS)
    moved = ("report_digest", "observed_by", "observed_at", "healthy")
    if dialect in ("sqlite", "postgresql"):
        new = "excluded." if dialect == "sqlite" else "EXCLUDED."
        sets = ", ".join(f"{c} = {new}{c}" for c in ("report_order", *moved))
        sets += f", native_since = COALESCE(healthmgr_amphora.native_since, {new}native_since)"
        if dialect == "sqlite":
            values = "VALUES (" + ", ".join("?" for _ in REPORT_COLUMNS) + ")"
        else:
            values = (
                "SELECT u.id, u.ord, u.dg, %(by)s, u.at, u.ok, u.nat FROM unnest("
                "%(id)s::varchar[], %(ord)s::bigint[], %(dg)s::bigint[], %(at)s::timestamp[], "
                "%(ok)s::boolean[], %(nat)s::timestamp[]) AS u(id, ord, dg, at, ok, nat)"
            )
        return Statement(
            f"INSERT INTO healthmgr_amphora ({columns}) {values} "
            f"ON CONFLICT (amphora_id) DO UPDATE SET {sets} "
            f"WHERE healthmgr_amphora.report_order < {new}report_order",
            arrays=dialect == "postgresql",
        )
    if dialect == "mysql":
        newer = "report_order < VALUES(report_order)"
        sets = [f"{c} = IF({newer}, VALUES({c}), {c})" for c in moved]
        sets.append("native_since = COALESCE(native_since, VALUES(native_since))")
        sets.append("report_order = GREATEST(report_order, VALUES(report_order))")  # last
        placeholders = ", ".join("%s" for _ in REPORT_COLUMNS)
        return Statement(
            f"INSERT INTO healthmgr_amphora ({columns}) VALUES ({placeholders}) "
            f"ON DUPLICATE KEY UPDATE {', '.join(sets)}",
            arrays=False,
        )
    raise ValueError(f"unsupported database dialect {dialect!r}")


def report_params(dialect: str, reports: Sequence[ReportWrite], manager: str) -> Any:
    """Driver parameters for ``report_statement``, rows sorted by amphora id."""
    rows = sorted(reports, key=lambda r: r.amphora_id)
    ids = [text_id(r.amphora_id) for r in rows]
    native = [r.observed_at if r.native else None for r in rows]
    if dialect == "postgresql":
        return {
            "id": pg_array(ids),
            "ord": pg_array(r.order for r in rows),
            "dg": pg_array(r.digest for r in rows),
            "by": manager,
            "at": pg_times(r.observed_at for r in rows),
            "ok": pg_bools(r.healthy for r in rows),
            "nat": pg_times(native),
        }
    if dialect == "sqlite":
        times = sqlite_times(r.observed_at for r in rows)
        return [
            (i, r.order, r.digest, manager, at, int(r.healthy), at if n else None)
            for i, r, n, at in zip(ids, rows, native, times, strict=True)
        ]
    return [
        (i, r.order, r.digest, manager, r.observed_at, r.healthy, n)
        for i, r, n in zip(ids, rows, native, strict=True)
    ]


def status_groups(reports: Iterable[ReportWrite]) -> list[tuple[str, list[_Row]]]:
    """Per table (in lock order) the statuses the reports determined, sorted by id.

    Two reports naming one object (the amphorae of an ACTIVE_STANDBY pair):
    the heartbeat that proves the later time wins, as the later one would in
    Octavia, where every heartbeat reads and writes the database.
    """
    chosen: dict[tuple[str, bytes], tuple[dt.datetime, str]] = {}
    for r in reports:
        for w in unpack_statuses(r.statuses):
            key = (w.table, w.id)
            held = chosen.get(key)
            if held is None or r.observed_at > held[0]:
                chosen[key] = (r.observed_at, w.operating_status)
    per_table: dict[str, dict[bytes, str]] = {t: {} for t in STATUS_TABLE_ORDER}
    for (table, obj), (_, value) in chosen.items():
        per_table[table][obj] = value
    return [
        (table, [{"b_id": id_str(k), "b_status": v} for k, v in sorted(rows.items())])
        for table, rows in per_table.items()
        if rows
    ]


def status_update(table: sa.Table, *, stamp: bool = False) -> sa.Update:
    """``stamp``: also set ``updated_at`` (Octavia's repositories do, in its database)."""
    # "<> :status" skips no-op writes: fewer row locks, no needless undo/WAL.
    values: dict[str, Any] = {"operating_status": sa.bindparam("b_status")}
    if stamp:
        values["updated_at"] = sa.func.utc_timestamp()
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"))
        .where(table.c.operating_status != sa.bindparam("b_status"))
        .values(**values)
    )

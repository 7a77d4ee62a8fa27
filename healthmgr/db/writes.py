"""The statements of one flush: plain Core, one executemany per kind.

Each builder returns a statement and the parameter rows for it, already
coalesced and sorted by key: sorting gives every manager the same lock order
on the same rows, so two managers flushing at once wait for each other
instead of deadlocking.

Dialects differ only in the upsert syntax; the semantics are the same:

- health: ``last_update`` only moves forward (GREATEST / MAX), ``busy`` is
  never touched by an update (False on insert);
- stats: one upsert per heartbeat, applied in ``seq`` order, adding
  ``value - last_value`` under the same epoch (or ``value`` after an epoch
  change or a counter that went backwards), and only when ``seq`` is newer
  than the row's ``last_seq``. The comparison happens in the database, so
  several managers sharing one amphora's heartbeats count every byte once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from healthmgr import constants as C
from healthmgr.batch import STATUS_TABLES, HealthBump, StatsUpdate, StatusWrite
from healthmgr.db.models import AmphoraHealth, ListenerStatistics
from healthmgr.wire.values import id_str

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")
MAX_COUNTER = 2**63 - 1  # BIGINT
# Lock order for status writes (children first), the same in every manager.
STATUS_TABLE_ORDER = ("member", "pool", "listener", "load_balancer")

_health = AmphoraHealth.__table__
_stats = ListenerStatistics.__table__
_Row = dict[str, Any]


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


def stats_problem(s: StatsUpdate) -> str | None:
    """Why the database cannot take this update (BIGINT columns), or None."""
    for name in (*COUNTERS, "active_connections", "seq", "epoch"):
        value = getattr(s, name)
        if not 0 <= value <= MAX_COUNTER:
            return (
                f"StatsUpdate.{name}={value} for listener {id_str(s.listener_id)} "
                f"on amphora {id_str(s.amphora_id)} is outside 0..2**63-1"
            )
    return None


def valid_parts(
    statuses: Iterable[StatusWrite], stats: Iterable[StatsUpdate]
) -> tuple[list[StatusWrite], list[StatsUpdate], list[str]]:
    """Split off what the database would reject, with a reason for each."""
    ok_statuses: list[StatusWrite] = []
    ok_stats: list[StatsUpdate] = []
    problems: list[str] = []
    for w in statuses:
        problem = status_problem(w)
        if problem:
            problems.append(problem)
        else:
            ok_statuses.append(w)
    for s in stats:
        problem = stats_problem(s)
        if problem:
            problems.append(problem)
        else:
            ok_stats.append(s)
    return ok_statuses, ok_stats, problems


# --- health bumps -----------------------------------------------------------


def health_rows(bumps: Iterable[HealthBump]) -> list[_Row]:
    """One row per amphora (the newest bump), sorted by id."""
    newest: dict[bytes, dt.datetime] = {}
    for b in bumps:
        seen = newest.get(b.amphora_id)
        if seen is None or b.last_update > seen:
            newest[b.amphora_id] = b.last_update
    return [
        {"amphora_id": id_str(k), "last_update": v, "busy": False}
        for k, v in sorted(newest.items())
    ]


def health_upsert(dialect: str) -> Insert:
    if dialect == "postgresql":
        stmt = postgresql.insert(_health)
        return stmt.on_conflict_do_update(
            index_elements=[_health.c.amphora_id],
            set_={
                "last_update": sa.func.greatest(_health.c.last_update, stmt.excluded.last_update)
            },
        )
    if dialect == "sqlite":
        stmt = sqlite.insert(_health)
        # SQLite stores DATETIME as fixed-width ISO text: text order is time order.
        return stmt.on_conflict_do_update(
            index_elements=[_health.c.amphora_id],
            set_={"last_update": sa.func.max(_health.c.last_update, stmt.excluded.last_update)},
        )
    if dialect == "mysql":
        stmt = mysql.insert(_health)
        return stmt.on_duplicate_key_update(
            last_update=sa.func.greatest(_health.c.last_update, stmt.inserted.last_update)
        )
    raise ValueError(f"unsupported database dialect {dialect!r}")


# --- status writes ----------------------------------------------------------


def status_groups(writes: Iterable[StatusWrite]) -> list[tuple[str, list[_Row]]]:
    """Per table (in lock order): the last write per id, sorted by id."""
    per_table: dict[str, dict[bytes, str]] = {t: {} for t in STATUS_TABLE_ORDER}
    for w in writes:
        per_table[w.table][w.id] = w.operating_status
    return [
        (table, [{"b_id": id_str(k), "b_status": v} for k, v in sorted(rows.items())])
        for table, rows in per_table.items()
        if rows
    ]


def status_update(table: sa.Table) -> sa.Update:
    # "<> :status" skips no-op writes: fewer row locks, no needless undo/WAL.
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"))
        .where(table.c.operating_status != sa.bindparam("b_status"))
        .values(operating_status=sa.bindparam("b_status"))
    )


# --- listener statistics ----------------------------------------------------


def _sorted_stats(updates: Iterable[StatsUpdate]) -> list[StatsUpdate]:
    return sorted(updates, key=lambda s: (s.listener_id, s.amphora_id, s.seq))


def stats_rows(updates: Sequence[StatsUpdate], now: dt.datetime) -> list[_Row]:
    """Insert rows, sorted by (listener, amphora, seq): applied in seq order."""
    rows = []
    for s in _sorted_stats(updates):
        row: _Row = {
            "listener_id": id_str(s.listener_id),
            "amphora_id": id_str(s.amphora_id),
            "active_connections": s.active_connections,
            "counters_epoch": s.epoch,
            "last_seq": s.seq,
            "updated_at": now,
        }
        for c in COUNTERS:
            value = getattr(s, c)
            row[c] = value
            # Deltas carry no absolute position: keep last_* at 0 for such rows.
            row[f"last_{c}"] = 0 if s.is_delta else value
        rows.append(row)
    return rows


def _absolute_set(old: sa.Table, new: Any) -> list[tuple[str, Any]]:
    """SET list for an absolute update, in the order MySQL needs.

    MySQL evaluates assignments left to right with already-updated values, so
    the accumulators come before ``last_*`` and ``counters_epoch`` they read.
    PostgreSQL and SQLite read the old row throughout; the order is harmless.
    """
    same_epoch = old.c.counters_epoch == new.counters_epoch
    items: list[tuple[str, Any]] = []
    for c in COUNTERS:
        value, last = new[f"last_{c}"], old.c[f"last_{c}"]
        delta = sa.case((sa.and_(same_epoch, value >= last), value - last), else_=value)
        items.append((c, old.c[c] + delta))
    items += [(f"last_{c}", new[f"last_{c}"]) for c in COUNTERS]
    items += [
        ("counters_epoch", new.counters_epoch),
        ("active_connections", new.active_connections),
        ("updated_at", new.updated_at),
    ]
    return items


def _delta_set(old: sa.Table, new: Any) -> list[tuple[str, Any]]:
    newer = old.c.last_seq < new.last_seq
    items: list[tuple[str, Any]] = [(c, old.c[c] + new[c]) for c in COUNTERS]
    items += [
        (
            "active_connections",
            sa.case((newer, new.active_connections), else_=old.c.active_connections),
        ),
        ("updated_at", new.updated_at),
    ]
    return items


def stats_upsert(dialect: str, delta: bool) -> Insert:
    keys = [_stats.c.listener_id, _stats.c.amphora_id]
    if dialect in ("postgresql", "sqlite"):
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(_stats)
        new = stmt.excluded
        if delta:
            greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
            set_ = dict(_delta_set(_stats, new))
            set_["last_seq"] = greatest(_stats.c.last_seq, new.last_seq)
            return stmt.on_conflict_do_update(index_elements=keys, set_=set_)
        set_ = dict(_absolute_set(_stats, new))
        set_["last_seq"] = new.last_seq
        return stmt.on_conflict_do_update(
            index_elements=keys, set_=set_, where=_stats.c.last_seq < new.last_seq
        )
    if dialect == "mysql":
        stmt = mysql.insert(_stats)
        new = stmt.inserted
        if delta:
            items = _delta_set(_stats, new)
            items.append(("last_seq", sa.func.greatest(_stats.c.last_seq, new.last_seq)))
            return stmt.on_duplicate_key_update(items)
        # No WHERE on ON DUPLICATE KEY UPDATE: every assignment is guarded by
        # the seq test instead, and last_seq is assigned last so that the test
        # sees the old value throughout.
        newer = _stats.c.last_seq < new.last_seq
        items = [
            (name, sa.case((newer, expr), else_=_stats.c[name]))
            for name, expr in _absolute_set(_stats, new)
        ]
        items.append(("last_seq", sa.func.greatest(_stats.c.last_seq, new.last_seq)))
        return stmt.on_duplicate_key_update(items)
    raise ValueError(f"unsupported database dialect {dialect!r}")

"""Listener statistics in Octavia's database: totals in Octavia's table, our state in ours.

Octavia's ``listener_statistics`` has the totals and ``active_connections``
only. What makes them exact (the sequence and counters epoch of the last
heartbeat applied, and its absolute counters) is in
``healthmgr_listener_statistics``. The guarantees are the native schema's
(:mod:`healthmgr.db.flush.statements`): absolute counters are applied only for a newer
``seq``, adding ``value - last`` under the same epoch or ``value`` after an
epoch change or a reset; deltas (Octavia v3) add up whatever their order;
``active_connections`` follows the newest heartbeat; totals saturate at
2**63-1 (and ``active_connections`` at Octavia's INT column's 2**31-1).

How, in the flush's transaction, so that several managers never count a
byte twice: the state rows of the batch are inserted if missing and locked
(one ``INSERT ... ON DUPLICATE KEY UPDATE`` in key order takes an exclusive
lock on every row, new or old), then read, the new state and the amounts to
add are computed here (:func:`fold`, pure), and both tables are written. A
second manager flushing the same rows waits on the locks and then reads the
first one's committed state.

Octavia mode runs on MariaDB/MySQL only: Octavia's migrations do not run on
PostgreSQL, and SQLite is not a database Octavia deploys on.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from healthmgr.db.flush.statements import MAX_COUNTER
from healthmgr.db.in_lists import in_lists
from healthmgr.rules.batch import StatsUpdate
from healthmgr.wire.ids import id_bytes, id_str

MAX_ACTIVE = 2**31 - 1  # Octavia's listener_statistics.active_connections is INT
_ABSENT = -1  # last_seq of a state row no heartbeat was applied to yet
_STATE_COLUMNS = (
    "listener_id",
    "amphora_id",
    "counters_epoch",
    "last_seq",
    "last_bytes_in",
    "last_bytes_out",
    "last_total_connections",
    "last_request_errors",
    "updated_at",
)
_TOTALS = ("bytes_in", "bytes_out", "total_connections", "request_errors")
Key = tuple[bytes, bytes]  # (listener id, amphora id)


@dataclass(frozen=True, slots=True)
class State:
    """One row of ``healthmgr_listener_statistics``."""

    epoch: int | None = None
    last_seq: int = _ABSENT
    last: tuple[int, int, int, int] = (0, 0, 0, 0)  # bytes_in, bytes_out, total_conns, errors


NEW = State()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one row's updates do: the new state, the amounts to add, the gauge."""

    state: State
    added: tuple[int, int, int, int]
    active: int | None  # None: no update newer than the state (keep the gauge)
    changed: bool  # the state row moves


def fold(state: State, updates: Iterable[StatsUpdate]) -> Outcome:
    """Apply one row's updates (any order; applied in ``seq`` order) to ``state``."""
    added = [0, 0, 0, 0]
    active: int | None = None
    changed = False
    for u in sorted(updates, key=lambda u: u.seq):
        values = (u.bytes_in, u.bytes_out, u.total_connections, u.request_errors)
        newer = u.seq > state.last_seq
        if u.is_delta:
            deltas = values
            if newer:
                active = u.active_connections
                state = State(
                    state.epoch if state.epoch is not None else u.epoch, u.seq, state.last
                )
                changed = True
        elif newer:
            same = state.epoch == u.epoch
            deltas = tuple(
                v - last if same and v >= last else v
                for v, last in zip(values, state.last, strict=True)
            )
            active = u.active_connections
            state = State(u.epoch, u.seq, values)  # type: ignore[arg-type]
            changed = True
        else:
            continue  # an older absolute heartbeat says nothing new
        added = [min(MAX_COUNTER, a + d) for a, d in zip(added, deltas, strict=True)]
    return Outcome(
        state,
        (added[0], added[1], added[2], added[3]),
        None if active is None else min(active, MAX_ACTIVE),
        changed,
    )


def by_row(updates: Iterable[StatsUpdate]) -> dict[Key, list[StatsUpdate]]:
    rows: dict[Key, list[StatsUpdate]] = defaultdict(list)
    for u in updates:
        rows[(u.listener_id, u.amphora_id)].append(u)
    return rows


# --- statements (MariaDB/MySQL) --------------------------------------------------

_LOCK_SQL = (
    f"INSERT INTO healthmgr_listener_statistics ({', '.join(_STATE_COLUMNS)}) "
    f"VALUES (%s, %s, NULL, {_ABSENT}, 0, 0, 0, 0, NULL) "
    "ON DUPLICATE KEY UPDATE last_seq = last_seq"
)
_READ_SQL = (
    "SELECT listener_id, amphora_id, counters_epoch, last_seq, last_bytes_in, "
    "last_bytes_out, last_total_connections, last_request_errors "
    "FROM healthmgr_listener_statistics WHERE amphora_id IN ({marks})"
)
_MOVE_SQL = (
    f"INSERT INTO healthmgr_listener_statistics ({', '.join(_STATE_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in _STATE_COLUMNS)}) ON DUPLICATE KEY UPDATE "
    + ", ".join(f"{c} = VALUES({c})" for c in _STATE_COLUMNS[2:])
)


def _saturating(col: str) -> str:
    new = f"VALUES({col})"
    return f"{col} = IF({new} > {MAX_COUNTER} - {col}, {MAX_COUNTER}, {col} + {new})"


_TOTALS_COLUMNS = ("listener_id", "amphora_id", *_TOTALS, "active_connections")
_ADD_SQL = (
    f"INSERT INTO listener_statistics ({', '.join(_TOTALS_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in _TOTALS_COLUMNS)}) ON DUPLICATE KEY UPDATE "
    + ", ".join(_saturating(c) for c in _TOTALS)
)
_ADD_WITH_ACTIVE_SQL = _ADD_SQL + ", active_connections = VALUES(active_connections)"

IN_CHUNK = 1000


class OctaviaStatsWriter:
    """The statistics part of a flush in Octavia mode (see the module docstring)."""

    def __init__(self, dialect: str) -> None:
        if dialect != "mysql":
            raise ValueError(
                f'[database] schema = "octavia" needs MariaDB/MySQL (Octavia\'s database), '
                f"not {dialect}"
            )

    def write(
        self, conn: sa.Connection, updates: Sequence[StatsUpdate], now: dt.datetime, run: Any
    ) -> None:
        """``run(conn, sql, params)`` executes driver SQL (counted by the caller)."""
        rows = by_row(updates)
        if not rows:
            return
        keys = sorted(rows)
        run(conn, _LOCK_SQL, [(id_str(lid), id_str(aid)) for lid, aid in keys])
        states = self._read(conn, keys, run)
        moves, with_active, keep_active = [], [], []
        for key in keys:
            out = fold(states.get(key, NEW), rows[key])
            lid, aid = id_str(key[0]), id_str(key[1])
            if out.changed:
                s = out.state
                moves.append((lid, aid, s.epoch, s.last_seq, *s.last, now))
            if out.active is not None:
                with_active.append((lid, aid, *out.added, out.active))
            elif any(out.added):
                keep_active.append((lid, aid, *out.added, 0))
        if moves:
            run(conn, _MOVE_SQL, moves)
        if with_active:
            run(conn, _ADD_WITH_ACTIVE_SQL, with_active)
        if keep_active:
            run(conn, _ADD_SQL, keep_active)

    @staticmethod
    def _read(conn: sa.Connection, keys: Sequence[Key], run: Any) -> dict[Key, State]:
        wanted = set(keys)
        amphorae = sorted({id_str(aid) for _, aid in keys})
        out: dict[Key, State] = {}
        for part in in_lists(amphorae, IN_CHUNK):
            sql = _READ_SQL.format(marks=", ".join("%s" for _ in part))
            for r in run(conn, sql, tuple(part)):
                key = (id_bytes(r[0]), id_bytes(r[1]))
                if key in wanted:
                    epoch = None if r[2] is None else int(r[2])
                    out[key] = State(epoch, int(r[3]), (int(r[4]), int(r[5]), int(r[6]), int(r[7])))
        return out

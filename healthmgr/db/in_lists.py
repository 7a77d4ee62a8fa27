"""Lists of ids for SQL ``IN (...)`` clauses: bounded, and of few statement texts.

An IN list of n placeholders is a different statement text for every n, and
drivers keep what they prepared by its text: Python's sqlite3 the last 128
statements of each connection, psycopg those that repeat. On SQLite a prepared
IN list costs about 220 bytes an id (a 16,384-id one 3.6 MB, kept per pooled
connection), so the daemon's SQLite heap at 100,000 amphorae was mostly such
statements. There, the ids go in one JSON parameter that ``json_each`` reads:
one short statement for any count. On the servers each list is padded to the
next power of two (at most its chunk size) by repeating its last id, which no
IN clause tells apart: a dozen texts per query instead of one per length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")

# Raw SQL on SQLite: ``column IN (JSON_EACH_SQL)`` with the ids as one JSON parameter.
JSON_EACH_SQL = "SELECT value FROM json_each(?)"


def padded(items: Sequence[T], cap: int) -> Sequence[T]:
    """``items`` repeated at the end up to the next power of two (``cap`` at most)."""
    n = len(items)
    width = min(1 << (n - 1).bit_length(), max(cap, n)) if n else 0
    return items if width == n else [*items, *[items[-1]] * (width - n)]


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_lists(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in lists of at most ``size``, each ``padded``."""
    for part in chunks(items, size):
        yield padded(part, size)


def json_ids(ids: Sequence[str]) -> str:
    """The parameter of :data:`JSON_EACH_SQL`."""
    return json.dumps(list(ids), separators=(",", ":"))


def one_of(
    column: sa.ColumnElement[Any], ids: Sequence[str], dialect: str, cap: int
) -> sa.ColumnElement[bool]:
    """``column IN ids``: through ``json_each`` on SQLite, else a ``padded`` list."""
    if dialect == "sqlite":
        each = sa.func.json_each(sa.literal(json_ids(ids), sa.String)).table_valued("value")
        return column.in_(sa.select(each.c.value))
    return column.in_(padded(ids, cap))

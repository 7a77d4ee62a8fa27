"""Lists of ids for SQL ``IN (...)`` clauses: bounded, and of few lengths.

An IN list of n placeholders is a different statement text for every n, and
drivers keep what they prepared by its text: Python's sqlite3 the last 128
statements of each connection (about 90 bytes a placeholder each, so lists of
a few thousand ids took tens of MB of the daemon's SQLite memory at 100,000
amphorae, and every flush prepared a new one), psycopg those that repeat.
Each list is therefore padded to the next power of two (at most its chunk
size) by repeating its last id, which no IN clause tells apart: a dozen texts
per query instead of one per length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def padded(items: Sequence[T], cap: int) -> Sequence[T]:
    """``items`` repeated at the end up to the next power of two (``cap`` at most)."""
    n = len(items)
    width = min(1 << (n - 1).bit_length(), max(cap, n)) if n else 0
    return items if width == n else [*items, *[items[-1]] * (width - n)]


def in_lists(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in lists of at most ``size``, each ``padded``."""
    for start in range(0, len(items), size):
        yield padded(items[start : start + size], size)

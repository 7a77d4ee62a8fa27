"""IN lists come in few statement texts: each is a statement the driver prepares and keeps.

On SQLite, one text per query (the ids are one JSON parameter); on the servers, a
dozen at most (lists padded to powers of two)."""

from __future__ import annotations

import re
from collections import defaultdict

import sqlalchemy as sa

from healthmgr.db.in_lists import chunks, in_lists, padded
from healthmgr.db.store import Store
from healthmgr.rules import constants as C
from healthmgr.rules.batch import FlushBatch, HealthBump
from tests.db.factories import make_fleet, utcnow
from tests.db.test_store_flush import report

# An IN list of placeholders: ?, %s or %(name)s (with psycopg's ::TYPE cast).
_IN_LIST = re.compile(r"IN \((?:[^()]|\([^()]*\))*\)")
LENGTHS_UP_TO_20 = 6  # 1, 2, 4, 8, 16, 32


def texts_allowed(engine: sa.Engine) -> int:
    return 1 if engine.dialect.name == "sqlite" else LENGTHS_UP_TO_20


def test_padded_repeats_the_last_item_up_to_a_power_of_two_or_the_cap() -> None:
    for n in range(1, 70):
        items = [f"id{i}" for i in range(n)]
        out = padded(items, cap=50)
        if n <= 32:
            assert len(out) == 1 << (n - 1).bit_length()  # 1, 2, 4, ..., 32
        else:
            assert len(out) == max(n, 50)  # the cap, or a longer list as it came
        assert list(out[:n]) == items and set(out) == set(items)
    assert padded([], cap=50) == []
    assert [len(part) for part in in_lists(list(range(25)), 10)] == [10, 10, 8]
    assert [set(part) for part in in_lists(list(range(25)), 10)][2] == set(range(20, 25))
    assert [list(part) for part in chunks(list(range(5)), 2)] == [[0, 1], [2, 3], [4]]


def statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record(conn, cursor, statement, params, context, executemany):
        seen.append(statement)

    return seen


def most_texts_of_one_query(seen: list[str]) -> int:
    """The largest number of distinct texts of one query that differ only in IN lists."""
    texts: dict[str, set[str]] = defaultdict(set)
    for statement in seen:
        texts[_IN_LIST.sub("IN (...)", statement)].add(statement)
    return max(len(variants) for variants in texts.values())


def test_topology_loads_of_any_size_use_few_list_lengths(engine: sa.Engine, store: Store) -> None:
    seeds = make_fleet(engine, 20)
    seen = statements(engine)
    for n in range(1, 21):
        found = store.load_topologies([s.amphora for s in seeds[:n]]).found
        assert set(found) == {s.amphora for s in seeds[:n]}
    assert most_texts_of_one_query(seen) <= texts_allowed(engine)


def test_flushes_of_any_size_use_few_list_lengths(engine: sa.Engine, store: Store) -> None:
    seeds = make_fleet(engine, 20)
    seen = statements(engine)
    for n in range(1, 21):
        now = utcnow()
        part = seeds[:n]
        result = store.flush(
            FlushBatch(
                health=tuple(HealthBump(s.amphora, now) for s in part),
                reports=tuple(report(s, s.amphora, n, C.ONLINE) for s in part),
            )
        )
        assert result.health_rows == n and result.reports_won == n
    assert most_texts_of_one_query(seen) <= texts_allowed(engine)

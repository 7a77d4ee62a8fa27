"""Statistics in Octavia's database: exact totals in its table, our state in ours."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from healthmgr.db.flush.octavia_stats import MAX_ACTIVE, NEW, State, fold
from healthmgr.db.store import Store
from healthmgr.rules.batch import FlushBatch, StatsUpdate

L, A = b"\x01" * 16, b"\x02" * 16


def absolute(seq: int, value: int, epoch: int = 0, active: int = 1) -> StatsUpdate:
    return StatsUpdate(L, A, seq, epoch, active, value, 2 * value, value // 10, 0)


def delta(seq: int, value: int, active: int = 1) -> StatsUpdate:
    return StatsUpdate(L, A, seq, 0, active, value, value, 0, 0, is_delta=True)


def test_absolute_counters_add_exact_deltas_once_in_seq_order() -> None:
    out = fold(NEW, [absolute(2, 150), absolute(1, 100), absolute(2, 150)])
    assert out.added[0] == 150 and out.state.last_seq == 2 and out.changed
    # An older heartbeat after it changes nothing; a reset (value went down) counts whole.
    again = fold(out.state, [absolute(1, 100)])
    assert again.added == (0, 0, 0, 0) and again.active is None and not again.changed
    reset = fold(out.state, [absolute(3, 40)])
    assert reset.added[0] == 40
    restarted = fold(out.state, [absolute(4, 500, epoch=9)])  # a new epoch: whole value
    assert restarted.added[0] == 500


def test_deltas_add_up_in_any_order_and_the_gauge_follows_the_newest() -> None:
    out = fold(State(0, 5, (0, 0, 0, 0)), [delta(7, 10, active=3), delta(6, 5, active=9)])
    assert out.added[0] == 15 and out.active == 3
    old = fold(out.state, [delta(4, 1, active=99)])
    assert old.added[0] == 1 and old.active is None
    assert fold(NEW, [absolute(1, 1, active=2**40)]).active == MAX_ACTIVE


@pytest.mark.mysql
def test_two_managers_flushing_one_amphoras_counters_count_every_byte_once(
    octavia_db_url: str,
) -> None:
    stores = [
        Store(make_engine(octavia_db_url), schema="octavia", manager_id=f"hm-{i}") for i in (1, 2)
    ]
    errors: list[BaseException] = []

    def flush_every_other(store: Store, first: int) -> Callable[[], None]:
        def work() -> None:
            try:
                for seq in range(first, 200, 2):  # round robin: each sees every 2nd
                    store.flush(FlushBatch(stats=(absolute(seq, 10 * seq),)))
            except BaseException as exc:
                errors.append(exc)

        return work

    threads = [threading.Thread(target=flush_every_other(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with stores[0].engine.connect() as conn:
        total = conn.execute(sa.text("SELECT bytes_in FROM listener_statistics")).scalar()
        state = conn.execute(
            sa.text("SELECT last_seq, last_bytes_in FROM healthmgr_listener_statistics")
        ).one()
    for s in stores:
        s.engine.dispose()
    # Whatever the interleaving, the total is the newest absolute value: no byte twice.
    assert state.last_seq >= 198
    assert total == state.last_bytes_in == 10 * state.last_seq

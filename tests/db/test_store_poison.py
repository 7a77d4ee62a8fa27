"""Rows the database refuses never block the others (issue: one truth in the database).

On SQLite, PostgreSQL and MariaDB: counters saturate instead of overflowing,
the database's own refusals are isolated by bisection and reported, and a row
of the shared tables that cannot be read is left out of its topology load
without failing the other amphorae's.
"""

from __future__ import annotations

import sqlalchemy as sa

from healthmgr.db.flush.statements import MAX_COUNTER
from healthmgr.db.store import Store
from healthmgr.rules.batch import FlushBatch, HealthBump, StatsUpdate
from healthmgr.wire.ids import Id, id_str
from tests.db.factories import make_fleet, make_seed_lb, new_id, utcnow


def stats_row(engine: sa.Engine, listener: Id, amp: Id) -> tuple:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT bytes_in, bytes_out, total_connections FROM listener_statistics"
                " WHERE listener_id = :l AND amphora_id = :a"
            ),
            {"l": id_str(listener), "a": id_str(amp)},
        ).one()


def last_update(engine: sa.Engine, amp: Id):
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT last_update FROM amphora_health WHERE amphora_id = :a"),
            {"a": id_str(amp)},
        ).scalar()


def test_totals_past_the_column_saturate_on_every_database(engine: sa.Engine, store: Store) -> None:
    """The poison of the issue: 2**63-1 under epoch 1, then again under epoch 2
    (a later flush). The total stops at 2**63-1 (an integer on SQLite too, never
    a float), nothing is refused, and a neighbour's statistics land."""
    poisoned, honest = make_fleet(engine, 2)
    top = MAX_COUNTER
    for seq, epoch in ((1, 1), (2, 2), (3, 3)):
        result = store.flush(
            FlushBatch(
                health=(
                    HealthBump(poisoned.amphora, utcnow()),
                    HealthBump(honest.amphora, utcnow()),
                ),
                stats=(
                    StatsUpdate(
                        poisoned.listener, poisoned.amphora, seq, epoch, 0, top, top, top, 0
                    ),
                    StatsUpdate(honest.listener, honest.amphora, seq, 1, 0, 10 * seq, 5, seq, 0),
                ),
            )
        )
        assert result.refused == ()
    row = stats_row(engine, poisoned.listener, poisoned.amphora)
    assert tuple(row) == (top, top, top)
    assert all(type(v) is int for v in row)
    assert tuple(stats_row(engine, honest.listener, honest.amphora)) == (30, 5, 3)


def test_a_decrease_within_one_epoch_is_a_reset_and_saturates_too(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine)
    li, amp, top = seed.listener, seed.amphora, MAX_COUNTER
    for seq, value in ((1, top - 5), (2, 3), (3, top)):  # 3 < top-5: a reset within epoch 1
        store.flush(FlushBatch(stats=(StatsUpdate(li, amp, seq, 1, 0, value, 0, 0, 0),)))
    assert stats_row(engine, li, amp)[0] == top  # (top-5) + 3 + (top-3): saturated


def test_delta_counters_saturate(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine)
    li, amp, top = seed.listener, seed.amphora, MAX_COUNTER
    for seq in (1, 2):
        store.flush(
            FlushBatch(stats=(StatsUpdate(li, amp, seq, 0, 0, top - 1, 1, 1, 0, is_delta=True),))
        )
    assert tuple(stats_row(engine, li, amp)) == (top, 2, 2)


def _refuse_big_counters(engine: sa.Engine) -> None:
    """A constraint of the database's own that the manager cannot pre-check."""
    limit = 1_000_000
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for event in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER poison_{event.lower()} BEFORE {event} ON listener_statistics"
                    f" WHEN NEW.bytes_in > {limit}"
                    " BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: poison'); END"
                )
        else:
            conn.exec_driver_sql(
                f"ALTER TABLE listener_statistics ADD CONSTRAINT poison CHECK (bytes_in <= {limit})"
            )


def test_a_row_the_database_refuses_is_isolated_and_the_rest_lands(
    engine: sa.Engine, store: Store
) -> None:
    fleet = make_fleet(engine, 9)
    _refuse_big_counters(engine)
    bad = fleet[4]
    now = utcnow()
    batch = FlushBatch(
        health=tuple(HealthBump(s.amphora, now) for s in fleet),
        stats=tuple(
            StatsUpdate(s.listener, s.amphora, 1, 1, 0, 5_000_000 if s is bad else 7, 1, 1, 0)
            for s in fleet
        ),
    )
    result = store.flush(batch)
    (refused,) = result.refused
    assert (refused.table, refused.amphora_id, refused.reason) == (
        "listener_statistics",
        id_str(bad.amphora),
        "constraint",
    )
    assert result.attempts > 1  # isolated by bisection
    for s in fleet:
        assert last_update(engine, s.amphora) is not None  # even the bad one's health landed
        if s is not bad:
            assert stats_row(engine, s.listener, s.amphora)[0] == 7
    # The next flush of the good ones is a single transaction again.
    again = store.flush(FlushBatch(health=(HealthBump(fleet[0].amphora, utcnow()),)))
    assert (again.attempts, again.refused) == (1, ())


def test_an_unreadable_member_row_spoils_only_itself(engine: sa.Engine, store: Store) -> None:
    """A member whose id is not a UUID, in one amphora's pool: both amphorae of
    the batch load; that member is left out and reported."""
    broken, fine = make_fleet(engine, 2)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO member (id, pool_id, ip_address, protocol_port, backup,"
                " enabled, provisioning_status, operating_status)"
                " VALUES ('not-a-uuid', :p, '10.0.0.9', 80, false, true, 'ACTIVE', 'ONLINE')"
            ),
            {"p": id_str(broken.pool)},
        )
    loaded = store.load_topologies([broken.amphora, fine.amphora, new_id()])
    assert set(loaded.found) == {broken.amphora, fine.amphora}
    lb = loaded.found[broken.amphora].load_balancer
    assert lb is not None
    assert {m.id for m in lb.pools[0].members} == set(broken.members)
    (row,) = loaded.refused
    assert (row.table, row.key, row.reason) == ("member", "not-a-uuid", "unreadable")
    # Named with the amphora and load balancer it belongs to: what an operator looks for.
    assert row.amphora_id == id_str(broken.amphora)
    assert f"of load balancer {id_str(broken.load_balancer)}" in row.detail

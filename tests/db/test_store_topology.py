"""Store.load_topologies and friends, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from healthmgr.db.models import Listener, LoadBalancer, Member, Pool
from healthmgr.db.store import Store
from healthmgr.rules import constants as C
from healthmgr.rules.topology import AmphoraTopology, LoadBalancerTopology
from healthmgr.wire.ids import id_str
from tests.db.factories import make_amphora, make_fleet, make_seed_lb, new_id


def count_selects(engine: sa.Engine) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    return seen


def test_seed_topology_is_built_as_plain_values(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine)
    found = store.load_topologies([seed.amphora]).found

    amp = found[seed.amphora]
    assert isinstance(amp, AmphoraTopology)
    assert (amp.id, amp.status, amp.role) == (seed.amphora, C.ALLOCATED, C.STANDALONE)
    lb = amp.load_balancer
    assert isinstance(lb, LoadBalancerTopology)
    assert (lb.id, lb.enabled, lb.provisioning_status, lb.operating_status) == (
        seed.load_balancer,
        True,
        C.ACTIVE,
        C.ONLINE,
    )
    (listener,) = lb.listeners
    assert (listener.id, listener.enabled, listener.default_pool_id) == (
        seed.listener,
        True,
        seed.pool,
    )
    (pool,) = lb.pools
    assert pool.id == seed.pool
    assert sorted(m.id for m in pool.members) == sorted(seed.members)
    assert {m.pool_id for m in pool.members} == {seed.pool}
    assert {m.operating_status for m in pool.members} == {C.ONLINE}


def test_statuses_and_roles_are_the_shared_words_not_copies(
    engine: sa.Engine, store: Store
) -> None:
    """Each row brings its own copy of a status; the view keeps one per
    amphora, so the load hands out the one shared string (memory)."""
    seeds = [make_seed_lb(engine) for _ in range(2)]
    found = store.load_topologies([s.amphora for s in seeds]).found
    for seed in seeds:
        amp = found[seed.amphora]
        assert amp.status is C.ALLOCATED and amp.role is C.STANDALONE
        lb = amp.load_balancer
        assert lb is not None
        assert lb.provisioning_status is C.ACTIVE and lb.operating_status is C.ONLINE
        (listener,) = lb.listeners
        (pool,) = lb.pools
        assert listener.operating_status is C.ONLINE and pool.operating_status is C.ONLINE
        assert all(m.operating_status is C.ONLINE for m in pool.members)


def test_unknown_ids_are_absent_and_empty_input_costs_nothing(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine)
    selects = count_selects(engine)
    assert store.load_topologies([]).found == {}
    assert selects == []
    found = store.load_topologies([seed.amphora, new_id(), new_id()]).found
    assert set(found) == {seed.amphora}


def test_amphora_without_load_balancer(engine: sa.Engine, store: Store) -> None:
    spare = make_amphora(engine, status=C.READY)
    found = store.load_topologies([spare]).found
    assert found[spare].load_balancer is None
    assert found[spare].status == C.READY


def test_active_standby_pair_shares_one_topology(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, amphorae=2)
    found = store.load_topologies(seed.amphorae).found
    master, backup = (found[a] for a in seed.amphorae)
    assert (master.role, backup.role) == (C.MASTER, C.BACKUP)
    assert master.load_balancer == backup.load_balancer
    assert master.load_balancer is not None


def test_deleted_objects_are_left_out(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, listeners=2, members=3)
    gone_amp = make_amphora(engine, load_balancer=seed.load_balancer, status=C.DELETED)
    with engine.begin() as conn:
        for table, obj_id in (
            (Listener, seed.listeners[1]),
            (Pool, seed.pools[1]),
            (Member, seed.members[0]),
        ):
            conn.execute(
                sa.update(table)
                .where(table.c.id == id_str(obj_id))
                .values(provisioning_status=C.DELETED)
            )
    found = store.load_topologies([seed.amphora, gone_amp]).found
    assert set(found) == {seed.amphora}
    lb = found[seed.amphora].load_balancer
    assert lb is not None
    assert [li.id for li in lb.listeners] == [seed.listeners[0]]
    assert [p.id for p in lb.pools] == [seed.pools[0]]
    assert seed.members[0] not in {m.id for m in lb.pools[0].members}
    assert len(lb.pools[0].members) == 2


def test_amphora_of_deleted_load_balancer_keeps_it_without_objects(
    engine: sa.Engine, store: Store
) -> None:
    """R27 needs to tell this amphora from a spare one: its load balancer comes
    back DELETED, without listeners or pools."""
    seed = make_seed_lb(engine)
    t = LoadBalancer
    with engine.begin() as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.id == id_str(seed.load_balancer))
            .values(provisioning_status=C.DELETED)
        )
    lb = store.load_topologies([seed.amphora]).found[seed.amphora].load_balancer
    assert lb is not None
    assert (lb.id, lb.provisioning_status, lb.listeners, lb.pools) == (
        seed.load_balancer,
        C.DELETED,
        (),
        (),
    )
    assert store.load_load_balancer(seed.load_balancer) is None


def test_disabled_and_pending_values_come_through(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(
        engine,
        enabled=False,
        provisioning_status=C.PENDING_UPDATE,
        operating_status=C.OFFLINE,
        child_operating_status=C.NO_MONITOR,
    )
    lb = store.load_load_balancer(seed.load_balancer)
    assert lb is not None
    assert (lb.enabled, lb.provisioning_status, lb.operating_status) == (
        False,
        C.PENDING_UPDATE,
        C.OFFLINE,
    )
    assert {m.operating_status for p in lb.pools for m in p.members} == {C.NO_MONITOR}


def test_many_amphorae_in_a_fixed_number_of_queries(engine: sa.Engine, store: Store) -> None:
    seeds = make_fleet(engine, 60, listeners=2, members=3)
    selects = count_selects(engine)
    found = store.load_topologies([s.amphora for s in seeds]).found
    assert len(found) == 60
    # amphorae+LBs, listeners, pools, members: four, not four per amphora.
    assert len(selects) == 4
    for s in seeds:
        lb = found[s.amphora].load_balancer
        assert lb is not None and lb.id == s.load_balancer
        assert {li.id for li in lb.listeners} == set(s.listeners)
        assert {m.id for p in lb.pools for m in p.members} == set(s.members)


def test_in_lists_are_chunked(
    engine: sa.Engine, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from healthmgr.db import topology_queries

    monkeypatch.setattr(topology_queries, "IN_CHUNK", 7)
    seeds = make_fleet(engine, 20)
    selects = count_selects(engine)
    found = store.load_topologies([s.amphora for s in seeds]).found
    assert {a for a in found} == {s.amphora for s in seeds}
    assert len(selects) == 3 * 4  # ceil(20 / 7) chunks of four queries


def test_refresh_by_load_balancer(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, amphorae=2)
    other = make_seed_lb(engine)
    found = store.load_amphorae_of(seed.load_balancer)
    assert set(found) == set(seed.amphorae)
    lb = store.load_load_balancer(other.load_balancer)
    assert lb is not None and lb.listeners[0].id == other.listener
    assert store.load_load_balancer(new_id()) is None

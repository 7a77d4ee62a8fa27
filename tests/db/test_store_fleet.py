"""Store.load_fleet and the fleet loader, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa
import trio

from healthmgr.db.models import AmphoraReport
from healthmgr.db.store import Store
from healthmgr.manager.fleet import Fleet
from healthmgr.manager.fleet_loader import FleetLoader
from healthmgr.rules import constants as C
from healthmgr.wire.ids import id_str
from tests.db.factories import make_amphora, make_seed_lb


def spoke_native(engine: sa.Engine, amphora: bytes, native: bool = True) -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(AmphoraReport).values(
                amphora_id=id_str(amphora),
                report_order=1,
                report_digest=0,
                observed_by="hm",
                observed_at=now,
                healthy=True,
                native_since=now if native else None,
            )
        )


def test_load_fleet_lists_live_amphorae_and_the_native_ones(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine, amphorae=2)
    spare = make_amphora(engine, status=C.READY, with_health=False)
    deleted = make_amphora(engine, status=C.DELETED)
    stopped = make_amphora(engine, status=C.FAILOVER_STOPPED)
    spoke_native(engine, seed.amphorae[0])
    spoke_native(engine, seed.amphorae[1], native=False)  # a report, but Octavia format
    spoke_native(engine, deleted)

    known, native = store.load_fleet()
    assert known == {*seed.amphorae, spare, stopped}
    assert native == {seed.amphorae[0]}
    assert all(type(i) is bytes and len(i) == 16 for i in known)


def test_load_fleet_of_an_empty_database(store: Store) -> None:
    assert store.load_fleet() == (set(), set())


def test_loader_replaces_the_fleet_and_survives_a_failing_database(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine)
    fleet = Fleet()
    failing = {"on": False}

    def load() -> tuple[set[bytes], set[bytes]]:
        if failing["on"]:
            raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))
        return store.load_fleet()

    loader = FleetLoader(load, fleet, interval=0.01)

    async def main() -> None:
        assert await loader.load_once()
        assert fleet.loaded and fleet.known(seed.amphora)
        failing["on"] = True
        assert not await loader.load_once()
        assert loader.failures == 1 and fleet.known(seed.amphora)  # the last fleet stands
        failing["on"] = False
        newcomer = make_amphora(engine)
        assert await loader.load_once()
        assert loader.failures == 0 and fleet.known(newcomer)

    trio.run(main)


def test_loader_gives_up_on_a_stuck_query() -> None:
    fleet = Fleet()
    stuck = threading.Event()  # the query hangs until the test lets it go

    def load() -> tuple[set[bytes], set[bytes]]:
        stuck.wait(5)
        return {b"x" * 16}, set()

    loader = FleetLoader(load, fleet, interval=0.01, timeout=0.2)

    async def main() -> None:
        with trio.fail_after(3):
            assert not await loader.load_once()
        assert loader.failures == 1 and not fleet.loaded
        stuck.set()

    trio.run(main)

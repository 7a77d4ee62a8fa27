"""Stale amphorae: count, claim exactly once across managers, breaker, outcomes."""

from __future__ import annotations

import datetime as dt
import threading

import pymysql
import pytest
import sqlalchemy as sa

from healthmgr import constants as C
from healthmgr.batch import FlushBatch, HealthBump
from healthmgr.db import claims
from healthmgr.db.models import Amphora, AmphoraHealth, FailoverRequest, LoadBalancer
from healthmgr.db.store import Claim, Store, is_retryable
from healthmgr.wire.values import Id, id_str
from tests.db.factories import make_amphora, make_seed_lb, make_test_engine, new_id, utcnow

TIMEOUT = dt.timedelta(seconds=60)
OLD = dt.timedelta(minutes=10)


def cutoff() -> dt.datetime:
    return utcnow() - TIMEOUT


def stale_amp(engine: sa.Engine, **kw) -> Id:
    return make_amphora(engine, last_update=utcnow() - OLD, **kw)


def busy_of(engine: sa.Engine, amp: Id) -> bool:
    t = AmphoraHealth.__table__
    with engine.connect() as conn:
        return bool(
            conn.execute(sa.select(t.c.busy).where(t.c.amphora_id == id_str(amp))).scalar_one()
        )


def requests(engine: sa.Engine) -> list[sa.Row]:
    t = FailoverRequest.__table__
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t).order_by(t.c.id)).all())


def column(engine: sa.Engine, table: sa.Table, col: str, obj: Id) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c[col]).where(table.c.id == id_str(obj))).scalar_one()


def test_what_counts_as_stale(engine: sa.Engine, store: Store) -> None:
    old = utcnow() - OLD
    stale = make_seed_lb(engine, last_update=old)
    stopped = stale_amp(engine, status=C.FAILOVER_STOPPED)
    no_lb = stale_amp(engine)
    # Not candidates:
    make_seed_lb(engine)  # fresh
    make_seed_lb(engine, last_update=old, busy=True)
    make_seed_lb(engine, last_update=old, provisioning_status=C.PENDING_UPDATE)
    make_seed_lb(engine, last_update=old, provisioning_status=C.PENDING_DELETE)
    for status in (C.READY, C.BOOTING, C.DELETED, C.PENDING_DELETE, C.ERROR):
        stale_amp(engine, status=status)
    orphan_health = new_id()  # a health row whose amphora row is gone
    store.flush(FlushBatch(health=(HealthBump(orphan_health, utcnow() - OLD),)))

    assert store.count_stale(cutoff()) == 3
    claimed = store.claim_stale(cutoff(), 10, "hm-1", "heartbeat timeout")
    assert {c.amphora_id for c in claimed} == {stale.amphora, stopped, no_lb}
    by_amp = {c.amphora_id: c for c in claimed}
    assert by_amp[stale.amphora].load_balancer_id == stale.load_balancer
    assert by_amp[no_lb].load_balancer_id is None
    assert store.count_stale(cutoff()) == 0


def test_claim_marks_busy_and_records_a_request(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, last_update=utcnow() - OLD)
    (claim,) = store.claim_stale(cutoff(), 5, "hm-1", "heartbeat timeout")
    assert isinstance(claim, Claim)
    assert busy_of(engine, seed.amphora)
    (req,) = requests(engine)
    assert req.id == claim.request_id
    assert (req.amphora_id, req.load_balancer_id) == (
        id_str(seed.amphora),
        id_str(seed.load_balancer),
    )
    assert (req.state, req.requested_by, req.reason, req.attempts) == (
        C.FAILOVER_PENDING,
        "hm-1",
        "heartbeat timeout",
        0,
    )
    assert store.claim_stale(cutoff(), 5, "hm-1", "again") == []


def test_claim_takes_the_oldest_first_up_to_the_limit(engine: sa.Engine, store: Store) -> None:
    now = utcnow()
    amps = [make_amphora(engine, last_update=now - OLD - dt.timedelta(seconds=i)) for i in range(5)]
    first = store.claim_stale(cutoff(), 2, "hm-1", "r")
    assert [c.amphora_id for c in first] == [amps[4], amps[3]]
    assert store.claim_stale(cutoff(), 0, "hm-1", "r") == []
    rest = store.claim_stale(cutoff(), 10, "hm-1", "r")
    assert [c.amphora_id for c in rest] == [amps[2], amps[1], amps[0]]


def test_circuit_breaker_stops_and_a_heartbeat_brings_back(engine: sa.Engine, store: Store) -> None:
    a, b = stale_amp(engine), stale_amp(engine)
    fresh = make_amphora(engine)
    pending = make_seed_lb(engine, last_update=utcnow() - OLD, provisioning_status=C.PENDING_UPDATE)
    stopped = store.stop_stale(cutoff())
    assert sorted(stopped) == sorted([a, b])
    amp = Amphora.__table__
    assert column(engine, amp, "status", a) == C.FAILOVER_STOPPED
    assert column(engine, amp, "status", fresh) == C.ALLOCATED
    assert column(engine, amp, "status", pending.amphora) == C.ALLOCATED
    assert not busy_of(engine, a)
    # Still stale (the breaker counts them), and a heartbeat brings one back.
    assert store.count_stale(cutoff()) == 2
    result = store.flush(FlushBatch(health=(HealthBump(a, utcnow()),)))
    assert result.recovered == (a,)
    assert column(engine, amp, "status", a) == C.ALLOCATED
    assert store.count_stale(cutoff()) == 1


def test_failover_outcomes(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, last_update=utcnow() - OLD)
    spare = stale_amp(engine)
    claims_ = {c.amphora_id: c for c in store.claim_stale(cutoff(), 5, "hm-1", "r")}
    ok, bad = claims_[spare], claims_[seed.amphora]

    store.update_failover_request(ok.request_id, C.FAILOVER_RUNNING, 1, None)
    store.update_failover_request(ok.request_id, C.FAILOVER_SUCCEEDED, 1, None)
    store.finish_failover(ok, True)
    store.update_failover_request(bad.request_id, C.FAILOVER_FAILED, 3, "exit status 2")
    store.finish_failover(bad, False)
    assert store.mark_lb_error(seed.load_balancer)

    rows = {r.id: r for r in requests(engine)}
    assert (rows[ok.request_id].state, rows[ok.request_id].attempts) == (C.FAILOVER_SUCCEEDED, 1)
    assert (rows[bad.request_id].state, rows[bad.request_id].attempts) == (C.FAILOVER_FAILED, 3)
    assert rows[bad.request_id].last_error == "exit status 2"
    lb = LoadBalancer.__table__
    assert column(engine, lb, "provisioning_status", seed.load_balancer) == C.ERROR
    # Both stay busy: never claimed again until released.
    assert busy_of(engine, spare) and busy_of(engine, seed.amphora)
    assert store.claim_stale(cutoff(), 5, "hm-1", "r") == []
    store.release(spare)
    assert [c.amphora_id for c in store.claim_stale(cutoff(), 5, "hm-1", "r")] == [spare]


def test_abandon_gives_the_amphora_back(engine: sa.Engine, store: Store) -> None:
    amp = stale_amp(engine)
    (claim,) = store.claim_stale(cutoff(), 5, "hm-1", "r")
    store.abandon(claim, "manager shutting down")
    assert not busy_of(engine, amp)
    (req,) = requests(engine)
    assert (req.state, req.last_error) == (C.FAILOVER_ABANDONED, "manager shutting down")
    (again,) = Store(engine).claim_stale(cutoff(), 5, "hm-2", "r")
    assert again.amphora_id == amp and again.request_id != claim.request_id


def test_bad_request_updates_name_the_problem(store: Store) -> None:
    with pytest.raises(ValueError, match="'DONE' is not one of"):
        store.update_failover_request(1, "DONE", 1, None)
    with pytest.raises(LookupError, match="no failover request with id 424242"):
        store.update_failover_request(424242, C.FAILOVER_RUNNING, 1, None)
    assert not store.mark_lb_error(new_id())


# --- several managers -------------------------------------------------------


def other_engine(engine: sa.Engine) -> sa.Engine:
    return make_test_engine(engine.url.render_as_string(hide_password=False), create=False)


def test_concurrent_managers_claim_each_stale_amphora_exactly_once(engine: sa.Engine) -> None:
    stale = {stale_amp(engine) for _ in range(40)}
    for _ in range(5):
        make_amphora(engine)  # fresh
    results: dict[str, list[Claim]] = {"hm-1": [], "hm-2": [], "hm-3": []}
    errors: list[BaseException] = []
    start = threading.Barrier(len(results))

    def manager(name: str) -> None:
        eng = other_engine(engine)
        store = Store(eng)
        try:
            start.wait()
            while claimed := store.claim_stale(cutoff(), 3, name, "heartbeat timeout"):
                results[name].extend(claimed)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=manager, args=(n,)) for n in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    all_claims = [c.amphora_id for cs in results.values() for c in cs]
    assert sorted(all_claims) == sorted(stale)  # every one, none twice
    reqs = requests(engine)
    assert len(reqs) == 40
    assert {r.requested_by for r in reqs} <= set(results)
    assert Store(engine).count_stale(cutoff()) == 0


def test_a_second_manager_skips_rows_the_first_holds(server_db_url: str) -> None:
    """While manager 1's claim transaction is open, manager 2 claims the others."""
    engine1 = make_test_engine(server_db_url)
    engine2 = make_test_engine(server_db_url, create=False)
    try:
        stale = {stale_amp(engine1) for _ in range(5)}
        with engine1.connect() as conn1:
            tx = conn1.begin()
            held = set(claims._lock_candidates(conn1, cutoff(), 2))
            assert len(held) == 2
            # Returns at once (SKIP LOCKED), without the two locked rows.
            got = Store(engine2, retries=0).claim_stale(cutoff(), 10, "hm-2", "r")
            assert {id_str(c.amphora_id) for c in got} == {id_str(a) for a in stale} - held
            tx.rollback()
        again = Store(engine2).claim_stale(cutoff(), 10, "hm-2", "r")
        assert {id_str(c.amphora_id) for c in again} == held
    finally:
        engine1.dispose()
        engine2.dispose()


def test_sqlite_claims_wait_for_the_writer_then_skip_its_claims(tmp_path) -> None:
    engine1 = make_test_engine(f"sqlite:///{tmp_path / 'hm.db'}")
    engine2 = make_test_engine(f"sqlite:///{tmp_path / 'hm.db'}", create=False)
    try:
        stale = {stale_amp(engine1) for _ in range(4)}
        first: list[Claim] = []
        with engine1.connect() as conn1:
            conn1.execution_options(sqlite_begin="IMMEDIATE")
            tx = conn1.begin()
            first = claims.claim_stale(conn1, cutoff(), 2, "hm-1", "r")
            done: list[list[Claim]] = []
            t = threading.Thread(
                target=lambda: done.append(Store(engine2).claim_stale(cutoff(), 10, "hm-2", "r"))
            )
            t.start()
            t.join(0.3)
            assert t.is_alive()  # queued behind the writer
            tx.commit()
        t.join(10)
        assert {c.amphora_id for c in done[0]} == stale - {c.amphora_id for c in first}
    finally:
        engine1.dispose()
        engine2.dispose()


def test_a_real_deadlock_is_retried(server_db_url: str) -> None:
    """Two transactions lock two rows in opposite orders: the victim runs again."""
    engine = make_test_engine(server_db_url)
    a, b = stale_amp(engine), stale_amp(engine)
    both_locked_first = threading.Barrier(2, timeout=10)
    attempts: list[int] = []
    errors: list[BaseException] = []
    t = AmphoraHealth.__table__

    def worker(order: tuple[Id, Id]) -> None:
        store = Store(other_engine(engine))
        calls = 0

        def work(conn: sa.Connection) -> None:
            nonlocal calls
            calls += 1
            conn.execute(sa.update(t).where(t.c.amphora_id == id_str(order[0])).values(busy=True))
            if calls == 1:
                both_locked_first.wait()
            conn.execute(sa.update(t).where(t.c.amphora_id == id_str(order[1])).values(busy=True))

        try:
            _, n = store._transaction(work, write=True)
            attempts.append(n)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.engine.dispose()

    threads = [threading.Thread(target=worker, args=(o,)) for o in ((a, b), (b, a))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    engine.dispose()
    assert not errors
    assert sorted(attempts) == [1, 2]


def test_retryable_errors() -> None:
    """A deadlock or serialization failure runs the transaction again at once; a
    lock wait that timed out does not (the wait was bounded on purpose: the
    caller backs off and the manager counts itself impaired)."""
    import sqlite3

    import psycopg

    def wrapped(orig: BaseException) -> sa.exc.DBAPIError:
        return sa.exc.OperationalError("UPDATE ...", {}, orig)

    assert is_retryable(wrapped(pymysql.err.OperationalError(1213, "Deadlock found")))
    assert is_retryable(wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert is_retryable(wrapped(psycopg.errors.SerializationFailure("could not serialize")))
    assert not is_retryable(wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout")))
    assert not is_retryable(wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_retryable(wrapped(pymysql.err.OperationalError(2003, "Can't connect")))
    assert not is_retryable(ValueError("x"))

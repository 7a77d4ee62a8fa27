"""Stale amphorae: count, claim exactly once across managers, breaker, outcomes."""

from __future__ import annotations

import datetime as dt
import threading

import pymysql
import pytest
import sqlalchemy as sa

from healthmgr.db import claims
from healthmgr.db.models import (
    Amphora,
    AmphoraHealth,
    AmphoraReport,
    FailoverRequest,
    LoadBalancer,
)
from healthmgr.db.store import Claim, Store, is_retryable
from healthmgr.rules import constants as C
from healthmgr.rules.batch import FlushBatch, HealthBump
from healthmgr.wire.ids import Id, id_str
from tests.db.factories import make_amphora, make_seed_lb, make_test_engine, new_id, utcnow

TIMEOUT = dt.timedelta(seconds=60)
OLD = dt.timedelta(minutes=10)


def cutoff() -> dt.datetime:
    return utcnow() - TIMEOUT


def stale_amp(engine: sa.Engine, **kw) -> Id:
    return make_amphora(engine, last_update=utcnow() - OLD, **kw)


def busy_of(engine: sa.Engine, amp: Id) -> bool:
    t = AmphoraHealth
    with engine.connect() as conn:
        return bool(
            conn.execute(sa.select(t.c.busy).where(t.c.amphora_id == id_str(amp))).scalar_one()
        )


def requests(engine: sa.Engine) -> list[sa.Row]:
    t = FailoverRequest
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t).order_by(t.c.id)).all())


def column(engine: sa.Engine, table: sa.Table, col: str, obj: Id) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c[col]).where(table.c.id == id_str(obj))).scalar_one()


WINDOW = dt.timedelta(minutes=1)
LEASE = 30.0


def stale_ids(store: Store, limit: int = 100) -> list[str]:
    read = store.read_for_check(cutoff(), utcnow() - WINDOW, limit)
    return [r.amphora_id for r in read.silent]


def claim_all(
    store: Store, manager: str = "hm-1", limit: int = 100, reason: str = "r"
) -> list[Claim]:
    return store.claim(dict.fromkeys(stale_ids(store, limit), reason), cutoff(), manager, LEASE)


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

    read = store.read_for_check(cutoff(), utcnow() - WINDOW, 100)
    expected = {id_str(a) for a in (stale.amphora, stopped, no_lb)}
    assert {r.amphora_id for r in read.silent} == expected
    assert read.silent_count == 3
    assert {r.amphora_id for r in read.silent if r.stopped} == {id_str(stopped)}
    assert read.stopped_count == 1
    claimed = claim_all(store)
    assert {c.amphora_id for c in claimed} == {stale.amphora, stopped, no_lb}
    by_amp = {c.amphora_id: c for c in claimed}
    assert by_amp[stale.amphora].load_balancer_id == stale.load_balancer
    assert by_amp[no_lb].load_balancer_id is None
    assert stale_ids(store) == []


def test_claim_marks_busy_and_records_a_running_request_under_a_lease(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine, last_update=utcnow() - OLD)
    (claim,) = claim_all(store, reason="heartbeat_timeout")
    assert isinstance(claim, Claim)
    assert busy_of(engine, seed.amphora)
    (req,) = requests(engine)
    assert req.id == claim.request_id
    assert (req.amphora_id, req.load_balancer_id) == (
        id_str(seed.amphora),
        id_str(seed.load_balancer),
    )
    assert (req.state, req.requested_by, req.owner, req.reason, req.attempts) == (
        C.FAILOVER_RUNNING,
        "hm-1",
        "hm-1",
        "heartbeat_timeout",
        0,
    )
    assert req.lease_expires_at > utcnow() + dt.timedelta(seconds=LEASE - 5)
    # Claimed once: no second claim, from anyone, for a busy amphora.
    assert store.claim({id_str(seed.amphora): "again"}, cutoff(), "hm-2", LEASE) == []


def test_a_claim_skips_what_another_manager_holds_and_takes_the_next(
    server_db_url: str,
) -> None:
    """A burst seen alike by two managers: the second one's claim of the same ids,
    limited to its free slots, takes the ones the first does not hold."""
    engine1 = make_test_engine(server_db_url)
    engine2 = make_test_engine(server_db_url, create=False)
    try:
        stale = sorted(id_str(stale_amp(engine1)) for _ in range(6))
        with engine1.connect() as conn1:
            conn1.execution_options(isolation_level="READ COMMITTED")
            tx = conn1.begin()
            first = claims.claim(conn1, dict.fromkeys(stale, "r"), cutoff(), "hm-1", LEASE, 3)
            second = Store(engine2, retries=0).claim(
                dict.fromkeys(stale, "r"), cutoff(), "hm-2", LEASE, 3
            )
            tx.commit()
        assert [id_str(c.amphora_id) for c in first] == stale[:3]
        assert [id_str(c.amphora_id) for c in second] == stale[3:]
    finally:
        engine1.dispose()
        engine2.dispose()


def test_a_claim_takes_only_amphorae_still_stale(engine: sa.Engine, store: Store) -> None:
    amp = stale_amp(engine)
    ids = stale_ids(store)
    store.flush(FlushBatch(health=(HealthBump(amp, utcnow()),)))  # it beat meanwhile
    assert store.claim(dict.fromkeys(ids, "r"), cutoff(), "hm-1", LEASE) == []


def test_silent_amphorae_are_listed_oldest_first_and_all_counted(
    engine: sa.Engine, store: Store
) -> None:
    now = utcnow()
    amps = [make_amphora(engine, last_update=now - OLD - dt.timedelta(seconds=i)) for i in range(5)]
    read = store.read_for_check(cutoff(), now - WINDOW, 2)
    assert [r.amphora_id for r in read.silent] == [id_str(amps[4]), id_str(amps[3])]
    assert (read.silent_count, read.fleet) == (5, 5)


def test_circuit_breaker_stops_and_a_heartbeat_brings_back(engine: sa.Engine, store: Store) -> None:
    a, b = stale_amp(engine), stale_amp(engine)
    fresh = make_amphora(engine)
    pending = make_seed_lb(engine, last_update=utcnow() - OLD, provisioning_status=C.PENDING_UPDATE)
    stopped = store.stop([id_str(a), id_str(b), id_str(fresh), id_str(pending.amphora)], cutoff())
    assert sorted(stopped) == sorted([id_str(a), id_str(b)])
    amp = Amphora
    assert column(engine, amp, "status", a) == C.FAILOVER_STOPPED
    assert column(engine, amp, "status", fresh) == C.ALLOCATED
    assert column(engine, amp, "status", pending.amphora) == C.ALLOCATED
    assert not busy_of(engine, a)
    # Still silent (the breaker counts them), and a heartbeat brings one back.
    assert len(stale_ids(store)) == 2
    result = store.flush(FlushBatch(health=(HealthBump(a, utcnow()),)))
    assert result.recovered == (a,)
    assert column(engine, amp, "status", a) == C.ALLOCATED
    assert stale_ids(store) == [id_str(b)]


def test_failover_outcomes(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, last_update=utcnow() - OLD)
    spare, handed, gone = stale_amp(engine), stale_amp(engine), stale_amp(engine)
    claims_ = {c.amphora_id: c for c in claim_all(store)}
    ok, bad = claims_[spare], claims_[seed.amphora]
    store.record_progress(bad.request_id, "hm-1", 2, "exit status 2")
    # Only the owner records an outcome.
    assert not store.record_outcome(ok, "hm-2", C.FAILOVER_SUCCEEDED, 1)
    assert store.record_outcome(ok, "hm-1", C.FAILOVER_SUCCEEDED, 1)
    assert store.record_outcome(bad, "hm-1", C.FAILOVER_FAILED, 3, "exit status 2")
    assert store.record_outcome(claims_[handed], "hm-1", C.FAILOVER_PENDING, 1)
    assert store.record_outcome(claims_[gone], "hm-1", C.FAILOVER_ABANDONED, 0, "shutting down")

    rows = {r.id: r for r in requests(engine)}
    assert (rows[ok.request_id].state, rows[ok.request_id].attempts) == (C.FAILOVER_SUCCEEDED, 1)
    assert (rows[bad.request_id].state, rows[bad.request_id].attempts) == (C.FAILOVER_FAILED, 3)
    assert rows[bad.request_id].last_error == "exit status 2"
    assert rows[claims_[handed].request_id].state == C.FAILOVER_PENDING
    assert all(r.owner is None and r.lease_expires_at is None for r in rows.values())
    lb = LoadBalancer
    assert column(engine, lb, "provisioning_status", seed.load_balancer) == C.ERROR
    # Known outcomes stay busy (never claimed again until released); an
    # abandoned one is given back.
    assert busy_of(engine, spare) and busy_of(engine, seed.amphora) and busy_of(engine, handed)
    assert not busy_of(engine, gone)
    assert [c.amphora_id for c in claim_all(store, "hm-2")] == [gone]
    store.release(spare)
    assert [c.amphora_id for c in claim_all(store)] == [spare]


def test_bad_outcome_states_name_the_problem(engine: sa.Engine, store: Store) -> None:
    stale_amp(engine)
    (claim,) = claim_all(store)
    with pytest.raises(ValueError, match="'DONE' is not one of"):
        store.record_outcome(claim, "hm-1", "DONE", 1)


# --- leases ----------------------------------------------------------------------


def expire_leases(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(FailoverRequest).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        )


def test_an_expired_lease_is_taken_over_and_a_renewed_one_is_not(
    engine: sa.Engine, store: Store
) -> None:
    stale_amp(engine)
    (claim,) = claim_all(store, "hm-dead")
    store.record_progress(claim.request_id, "hm-dead", 1, "killed")
    assert store.take_over("hm-2", LEASE, 10, cutoff()).claims == []  # lease still valid
    expire_leases(engine)
    store.renew_leases("hm-dead", [claim.request_id], LEASE)  # its owner is alive after all
    assert store.take_over("hm-2", LEASE, 10, cutoff()).claims == []
    expire_leases(engine)
    (taken,) = store.take_over("hm-2", LEASE, 10, cutoff()).claims
    assert (taken.request_id, taken.amphora_id, taken.attempts, taken.taken_over_from) == (
        claim.request_id,
        claim.amphora_id,
        1,
        "hm-dead",
    )
    (req,) = requests(engine)
    assert (req.state, req.owner) == (C.FAILOVER_RUNNING, "hm-2")
    assert store.take_over("hm-3", LEASE, 10, cutoff()).claims == []
    # The old owner can no longer record an outcome; the new one can.
    assert not store.record_outcome(claim, "hm-dead", C.FAILOVER_SUCCEEDED, 1)
    assert store.record_outcome(taken, "hm-2", C.FAILOVER_SUCCEEDED, 2)


def test_a_taken_over_amphora_that_beats_again_is_given_up(engine: sa.Engine, store: Store) -> None:
    amp = stale_amp(engine)
    claim_all(store, "hm-dead")
    store.flush(FlushBatch(health=(HealthBump(amp, utcnow()),)))
    expire_leases(engine)
    taken = store.take_over("hm-2", LEASE, 10, cutoff())
    assert taken.claims == []
    ((_, amphora, why),) = taken.abandoned
    assert (amphora, why) == (id_str(amp), "amphora beats again")
    (req,) = requests(engine)
    assert req.state == C.FAILOVER_ABANDONED and not busy_of(engine, amp)


def test_a_manual_request_without_lease_is_taken_over_even_for_a_live_amphora(
    engine: sa.Engine, store: Store
) -> None:
    amp = make_amphora(engine)  # fresh: alive
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(FailoverRequest).values(
                amphora_id=id_str(amp),
                load_balancer_id=None,
                reason="manual",
                requested_by="cli:op@host",
                requested_at=now,
                state=C.FAILOVER_RUNNING,
                attempts=0,
                updated_at=now,
            )
        )
    (taken,) = store.take_over("hm-1", LEASE, 10, cutoff()).claims
    assert (taken.amphora_id, taken.reason, taken.taken_over_from) == (amp, "manual", None)
    assert busy_of(engine, amp)


def test_liveness_rows_and_observers_in_the_check_reading(engine: sa.Engine, store: Store) -> None:
    from healthmgr.db.managers import Presence

    def presence(mid: str, impaired: bool) -> Presence:
        return Presence(
            mid,
            "host",
            1,
            "0",
            impaired,
            "kernel_drops" if impaired else None,
            None if impaired else 12.0,
            0.5,
            1.0,
            None,
            False,
            None,
        )

    store.write_presence(presence("hm-a", False), first=True)
    store.write_presence(presence("hm-b", True), first=True)
    read = store.read_for_check(cutoff(), utcnow() - WINDOW, 10)
    rows = {m.manager_id: m for m in read.managers}
    assert rows["hm-a"].age < 5 and not rows["hm-a"].impaired
    assert 11.0 < rows["hm-a"].healthy_for < 20.0
    assert rows["hm-b"].impaired and rows["hm-b"].healthy_for is None
    assert rows["hm-b"].impaired_reason == "kernel_drops"


def test_a_silent_amphora_beating_with_a_listener_count_failure_is_read_so(
    engine: sa.Engine, store: Store
) -> None:
    """The failover reason listener_count_mismatch comes from the stale scan: silent, and
    its newest report (after last_update) failed the listener count. A healthy report, or
    an unhealthy one older than last_update, is a plain heartbeat timeout."""
    unhealthy, healthy, older = stale_amp(engine), stale_amp(engine), stale_amp(engine)
    reports = [(unhealthy, False, utcnow()), (healthy, True, utcnow()), (older, False, None)]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(AmphoraReport),
            [
                {
                    "amphora_id": id_str(amp),
                    "report_order": 1,
                    "report_digest": 0,
                    "observed_by": "hm-a",
                    "observed_at": at or utcnow() - 2 * OLD,
                    "healthy": ok,
                }
                for amp, ok, at in reports
            ],
        )
    read = store.read_for_check(cutoff(), utcnow() - WINDOW, 10)
    assert {r.amphora_id: r.beating_unhealthy for r in read.silent} == {
        id_str(unhealthy): True,
        id_str(healthy): False,
        id_str(older): False,
    }


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
            while claimed := claim_all(store, name, limit=3):
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
    assert stale_ids(Store(engine)) == []


def test_a_second_manager_skips_rows_the_first_holds(server_db_url: str) -> None:
    """While manager 1's claim transaction is open, manager 2 claims the others."""
    engine1 = make_test_engine(server_db_url)
    engine2 = make_test_engine(server_db_url, create=False)
    try:
        stale = {id_str(stale_amp(engine1)) for _ in range(5)}
        held_ids = sorted(stale)[:2]
        with engine1.connect() as conn1:
            if conn1.dialect.name == "mysql":
                conn1.execution_options(isolation_level="READ COMMITTED")  # as Store writes
            tx = conn1.begin()
            held = {
                id_str(c.amphora_id)
                for c in claims.claim(conn1, dict.fromkeys(held_ids, "r"), cutoff(), "hm-1", LEASE)
            }
            assert held == set(held_ids)
            # Returns at once (SKIP LOCKED), without the two locked rows.
            got = Store(engine2, retries=0).claim(
                dict.fromkeys(stale, "r"), cutoff(), "hm-2", LEASE
            )
            assert {id_str(c.amphora_id) for c in got} == stale - held
            tx.rollback()
        again = Store(engine2).claim(dict.fromkeys(stale, "r"), cutoff(), "hm-2", LEASE)
        assert {id_str(c.amphora_id) for c in again} == held
    finally:
        engine1.dispose()
        engine2.dispose()


def test_sqlite_claims_wait_for_the_writer_then_skip_its_claims(tmp_path) -> None:
    engine1 = make_test_engine(f"sqlite:///{tmp_path / 'hm.db'}")
    engine2 = make_test_engine(f"sqlite:///{tmp_path / 'hm.db'}", create=False)
    try:
        stale = {stale_amp(engine1) for _ in range(4)}
        wanted = {id_str(a): "r" for a in stale}
        first: list[Claim] = []
        with engine1.connect() as conn1:
            conn1.execution_options(sqlite_begin="IMMEDIATE")
            tx = conn1.begin()
            first = claims.claim(conn1, dict(list(wanted.items())[:2]), cutoff(), "hm-1", LEASE)
            done: list[list[Claim]] = []
            t = threading.Thread(
                target=lambda: done.append(Store(engine2).claim(wanted, cutoff(), "hm-2", LEASE))
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
    t = AmphoraHealth

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

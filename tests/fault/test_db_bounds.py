"""Every wait on the database is bounded: a silent or refusing server through the relay.

The engines are the product's (``make_engine(url, timeout=T)``). Through the
relay's blackhole the server's kernel still acknowledges every byte, so no
TCP timer fires: what ends the wait is the client's reply deadline (psycopg)
or read timeout (PyMySQL), and then the connect timeout of the pool's
reconnect. Times are printed (``-s``) and bounded loosely (5 x T), never
asserted as a speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from healthmgr.db.errors import ErrorClass, diagnose
from tests.fault.conftest import Relayed

T = 1.5  # [database] timeout: reply deadline 2.5 s, connect timeout 2 s


@pytest.fixture
def engine(relayed: Relayed) -> Iterator[sa.Engine]:
    """The product's engine, through the relay."""
    eng = make_engine(relayed.url, timeout=T)
    yield eng
    eng.dispose()


def _select_one(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT 1").scalar_one())


def _failure(fn: Callable[[], object], limit: float) -> tuple[BaseException, float]:
    """Run ``fn`` in a thread; its error and how long it took (fails if it hangs past limit)."""
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - start
    assert not thread.is_alive(), f"still waiting after {elapsed:.1f} s: the wait is unbounded"
    assert "error" in outcome, "the query succeeded through a faulty relay"
    return outcome["error"], elapsed


def test_blackhole_fails_within_the_bound_and_the_pool_recovers(
    relayed: Relayed, engine: sa.Engine
) -> None:
    assert _select_one(engine) == 1  # a pooled connection, to be pre-pinged
    relayed.relay.blackhole()
    error, elapsed = _failure(lambda: _select_one(engine), 5 * T)
    found = diagnose(error)
    print(f"\nblackhole: {found} after {elapsed:.2f} s: {str(error).splitlines()[0]}")
    assert found.error_class is ErrorClass.CONNECTION
    assert relayed.relay.status()["bytes_dropped"] > 0
    relayed.relay.passthrough()
    assert _select_one(engine) == 1


def test_blackhole_during_a_transaction_fails_the_commit(
    relayed: Relayed, engine: sa.Engine
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    conn = engine.connect()
    conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    relayed.relay.blackhole()
    error, elapsed = _failure(conn.commit, 5 * T)
    print(f"\ncommit under blackhole: {diagnose(error)} after {elapsed:.2f} s")
    assert diagnose(error).error_class is ErrorClass.CONNECTION
    conn.close()
    relayed.relay.passthrough()
    assert _select_one(engine) == 1


def test_refused_connections_fail_at_once_and_the_pool_recovers(
    relayed: Relayed, engine: sa.Engine
) -> None:
    assert _select_one(engine) == 1
    relayed.relay.refuse()
    error, elapsed = _failure(lambda: _select_one(engine), 5 * T)
    found = diagnose(error)
    print(f"\nrefuse: {found} after {elapsed:.2f} s")
    assert (found.error_class, found.reason) == (ErrorClass.CONNECTION, "unreachable")
    relayed.relay.passthrough()
    assert _select_one(engine) == 1


def test_latency_below_the_bound_is_not_a_fault(relayed: Relayed, engine: sa.Engine) -> None:
    """Each round trip slower (0.5 s) but within the reply deadline: the call succeeds."""
    assert _select_one(engine) == 1  # connected without delay
    relayed.relay.delay(0.25)  # each way
    start = time.monotonic()
    assert _select_one(engine) == 1  # pre-ping, SELECT, rollback: three round trips
    print(f"\nwith 0.5 s round trips: {time.monotonic() - start:.2f} s")


def test_pool_checkout_is_bounded(relayed: Relayed) -> None:
    """All connections taken (stuck elsewhere): the next checkout fails after ``timeout``."""
    engine = make_engine(relayed.direct_url, timeout=0.5, pool_size=1, max_overflow=0)
    try:
        with engine.connect():
            error, elapsed = _failure(lambda: _select_one(engine), 5.0)
        found = diagnose(error)
        print(f"\npool checkout: {found} after {elapsed:.2f} s")
        assert (found.error_class, found.reason) == (ErrorClass.CONNECTION, "pool_timeout")
    finally:
        engine.dispose()

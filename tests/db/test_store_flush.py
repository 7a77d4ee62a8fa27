"""Store.flush on SQLite, PostgreSQL and MariaDB: health, statuses, exact stats."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from healthmgr.db.models import Amphora, AmphoraHealth, ListenerStatistics, Member, Pool
from healthmgr.db.store import Store
from healthmgr.rules import constants as C
from healthmgr.rules import status
from healthmgr.rules.batch import FlushBatch, HealthBump, ReportWrite, StatsUpdate, StatusWrite
from healthmgr.wire.ids import Id, id_str
from tests.db.factories import (
    make_amphora,
    make_fleet,
    make_seed_lb,
    make_test_engine,
    new_id,
    utcnow,
)

SEC = dt.timedelta(seconds=1)


def health_of(engine: sa.Engine, amp: Id) -> tuple[dt.datetime, bool] | None:
    t = AmphoraHealth
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.last_update, t.c.busy).where(t.c.amphora_id == id_str(amp))
        ).first()
    return None if row is None else (row.last_update, bool(row.busy))


def status_of(engine: sa.Engine, table: sa.Table, obj: Id) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(table.c.operating_status).where(table.c.id == id_str(obj))
        ).scalar_one()


def amp_status(engine: sa.Engine, amp: Id) -> str:
    t = Amphora
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.status).where(t.c.id == id_str(amp))).scalar_one()


COLUMNS = ("bytes_in", "bytes_out", "total_connections", "request_errors", "active_connections")


def stats_of(engine: sa.Engine, listener: Id, amp: Id) -> dict[str, int]:
    t = ListenerStatistics
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*(t.c[c] for c in COLUMNS), t.c.last_seq)
            .where(t.c.listener_id == id_str(listener))
            .where(t.c.amphora_id == id_str(amp))
        ).one()
    return dict(row._mapping)


# --- health bumps ----------------------------------------------------------


def test_bump_inserts_then_only_moves_forward(engine: sa.Engine, store: Store) -> None:
    amp = make_amphora(engine, with_health=False)
    t0 = dt.datetime(2030, 1, 1, 12, 0, 0, 123456)
    store.flush(FlushBatch(health=(HealthBump(amp, t0),)))
    assert health_of(engine, amp) == (t0, False)

    store.flush(FlushBatch(health=(HealthBump(amp, t0 - 5 * SEC),)))  # a late manager
    assert health_of(engine, amp) == (t0, False)

    store.flush(FlushBatch(health=(HealthBump(amp, t0 + SEC),)))
    assert health_of(engine, amp) == (t0 + SEC, False)


def test_bump_leaves_busy_alone(engine: sa.Engine, store: Store) -> None:
    old = utcnow() - 60 * SEC
    amp = make_amphora(engine, last_update=old, busy=True)
    now = utcnow()
    store.flush(FlushBatch(health=(HealthBump(amp, now),)))
    assert health_of(engine, amp) == (now, True)


def test_bumps_of_one_amphora_in_a_batch_coalesce_to_the_newest(
    engine: sa.Engine, store: Store
) -> None:
    amp = make_amphora(engine, with_health=False)
    t0 = dt.datetime(2030, 1, 1)
    bumps = tuple(HealthBump(amp, t0 + i * SEC) for i in (3, 1, 7, 2))
    stats = store.flush(FlushBatch(health=bumps))
    assert stats.health_rows == 1
    assert health_of(engine, amp) == (t0 + 7 * SEC, False)


def test_bump_returns_failover_stopped_amphorae_to_allocated(
    engine: sa.Engine, store: Store
) -> None:
    stopped = make_amphora(engine, status=C.FAILOVER_STOPPED, last_update=utcnow() - 99 * SEC)
    allocated = make_amphora(engine)
    other_stopped = make_amphora(engine, status=C.FAILOVER_STOPPED)
    result = store.flush(
        FlushBatch(health=(HealthBump(stopped, utcnow()), HealthBump(allocated, utcnow())))
    )
    assert result.recovered == (stopped,)
    assert amp_status(engine, stopped) == C.ALLOCATED
    assert amp_status(engine, allocated) == C.ALLOCATED
    assert amp_status(engine, other_stopped) == C.FAILOVER_STOPPED  # not bumped


# --- reports: newest wins across managers, statuses only when they differ ----


def report(
    seed,
    amp: Id,
    order: int,
    member1: str = C.ONLINE,
    *,
    at: dt.datetime | None = None,
    healthy: bool = True,
    native: bool = True,
    cache_differs: bool = False,
) -> ReportWrite:
    """A report determining the seed topology with member 1 in ``member1``."""
    lb_status = C.DEGRADED if member1 == C.ERROR else C.ONLINE
    determined = (
        StatusWrite("load_balancer", seed.load_balancer, lb_status),
        StatusWrite("listener", seed.listener, C.ONLINE),
        StatusWrite("pool", seed.pool, lb_status),
        StatusWrite("member", seed.members[0], C.ONLINE),
        StatusWrite("member", seed.members[1], member1),
    )
    return ReportWrite(
        amp,
        order,
        status.digest(determined),
        determined,
        at or utcnow(),
        healthy,
        native,
        cache_differs,
    )


def report_row(engine: sa.Engine, amp: Id) -> sa.Row | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT report_order, report_digest, observed_by, healthy, native_since"
                " FROM healthmgr_amphora WHERE amphora_id = :a"
            ),
            {"a": id_str(amp)},
        ).first()


def test_report_writes_its_statuses_and_only_operating_status(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine)
    result = store.flush(FlushBatch(reports=(report(seed, seed.amphora, 5, C.ERROR),)))
    assert (result.reports_won, result.status_rows) == (1, 5)
    m, p = Member, Pool
    assert status_of(engine, m, seed.members[1]) == C.ERROR
    assert status_of(engine, m, seed.members[0]) == C.ONLINE
    assert status_of(engine, p, seed.pool) == C.DEGRADED
    with engine.connect() as conn:
        prov = conn.execute(
            sa.select(p.c.provisioning_status).where(p.c.id == id_str(seed.pool))
        ).scalar_one()
    assert prov == C.ACTIVE
    row = report_row(engine, seed.amphora)
    assert (row.report_order, row.observed_by, bool(row.healthy)) == (5, "healthmgr", True)
    assert row.native_since is not None


def test_an_older_report_flushed_later_never_overwrites_a_newer_outcome(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine)
    other = Store(engine, manager_id="other")
    other.flush(FlushBatch(reports=(report(seed, seed.amphora, 4, C.ERROR),)))
    result = store.flush(FlushBatch(reports=(report(seed, seed.amphora, 3, C.ONLINE),)))
    assert (result.reports_won, result.status_rows) == (0, 0)
    assert status_of(engine, Member, seed.members[1]) == C.ERROR
    assert report_row(engine, seed.amphora).observed_by == "other"


def test_a_manager_whose_cache_is_behind_still_corrects_the_database(
    engine: sa.Engine, store: Store
) -> None:
    """Manager A wrote ERROR for a DOWN report; B, whose cache says ONLINE,
    processes the newer UP reports: it must write ONLINE although its own
    cache saw no change (the digest in the database differs)."""
    seed = make_seed_lb(engine)
    a, b = Store(engine, manager_id="a"), Store(engine, manager_id="b")
    b.flush(FlushBatch(reports=(report(seed, seed.amphora, 1, C.ONLINE),)))
    a.flush(FlushBatch(reports=(report(seed, seed.amphora, 2, C.ERROR),)))
    assert status_of(engine, Member, seed.members[1]) == C.ERROR
    result = b.flush(FlushBatch(reports=(report(seed, seed.amphora, 3, C.ONLINE),)))
    assert result.status_rows == 5
    assert status_of(engine, Member, seed.members[1]) == C.ONLINE
    # The same outcome again writes no status (the steady state).
    again = b.flush(FlushBatch(reports=(report(seed, seed.amphora, 4, C.ONLINE),)))
    assert (again.reports_won, again.status_rows) == (1, 0)


def test_a_report_whose_cache_differs_writes_even_with_the_same_digest(
    engine: sa.Engine, store: Store
) -> None:
    """Someone else (the API) changed a status without a report: the manager's
    re-read cache differs from what the heartbeat determines, so it writes."""
    seed = make_seed_lb(engine)
    store.flush(FlushBatch(reports=(report(seed, seed.amphora, 1, C.ONLINE),)))
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE member SET operating_status = 'OFFLINE' WHERE id = :i"),
            {"i": id_str(seed.members[1])},
        )
    store.flush(FlushBatch(reports=(report(seed, seed.amphora, 2, C.ONLINE),)))
    assert status_of(engine, Member, seed.members[1]) == C.OFFLINE  # same digest
    store.flush(FlushBatch(reports=(report(seed, seed.amphora, 3, C.ONLINE, cache_differs=True),)))
    assert status_of(engine, Member, seed.members[1]) == C.ONLINE


def test_two_reports_naming_one_object_the_later_proof_wins(
    engine: sa.Engine, store: Store
) -> None:
    """ACTIVE_STANDBY: both amphorae report the same members in one flush."""
    seed = make_seed_lb(engine, amphorae=2)
    master, backup = seed.amphorae
    t0 = utcnow()
    batch = FlushBatch(
        reports=(
            report(seed, master, 10, C.ERROR, at=t0),
            report(seed, backup, 10, C.ONLINE, at=t0 + SEC),
        )
    )
    store.flush(batch)
    assert status_of(engine, Member, seed.members[1]) == C.ONLINE


def test_invalid_values_are_refused_with_a_reason_and_the_rest_written(
    engine: sa.Engine, store: Store
) -> None:
    seed = make_seed_lb(engine)
    broken = report(seed, seed.amphora, 7)
    broken = ReportWrite(
        broken.amphora_id, 2**63, broken.digest, broken.statuses, broken.observed_at, True, True
    )
    batch = FlushBatch(
        reports=(broken,),
        stats=(
            StatsUpdate(seed.listener, seed.amphora, 1, 1, 0, 2**64 - 1, 0, 0, 0),
            StatsUpdate(seed.listener, seed.amphora, 2, 1, 0, 10, 0, 0, 0),
        ),
    )
    result = store.flush(batch)
    assert [(r.table, r.reason) for r in result.refused] == [
        ("healthmgr_amphora", "out_of_range"),
        ("listener_statistics", "out_of_range"),
    ]
    assert all(r.amphora_id == id_str(seed.amphora) for r in result.refused)
    assert "bytes_in=18446744073709551615" in result.refused[1].detail
    assert report_row(engine, seed.amphora) is None
    assert stats_of(engine, seed.listener, seed.amphora)["bytes_in"] == 10


# --- statistics: absolute counters to exact totals --------------------------


class Agent:
    """One amphora's listener as the agent reports it: absolute counters per epoch."""

    def __init__(self, listener: Id, amp: Id, seed: int = 0) -> None:
        self.listener, self.amp = listener, amp
        self.rng = random.Random(seed)
        self.seq = 0
        self.epoch = 1
        self.counters = [0, 0, 0, 0]
        self.totals = [0, 0, 0, 0]  # what really went through, across epochs

    def reload(self) -> None:
        """HAProxy reload: counters restart from zero under a new epoch."""
        self.epoch += 1
        self.counters = [0, 0, 0, 0]

    def heartbeat(self) -> StatsUpdate:
        self.seq += 1
        for i, top in enumerate((5000, 9000, 20, 2)):
            step = self.rng.randint(0, top)
            self.counters[i] += step
            self.totals[i] += step
        return StatsUpdate(
            self.listener,
            self.amp,
            self.seq,
            self.epoch,
            self.rng.randint(0, 50),
            *self.counters,
        )


def totals(engine: sa.Engine, agent: Agent) -> list[int]:
    s = stats_of(engine, agent.listener, agent.amp)
    return [s["bytes_in"], s["bytes_out"], s["total_connections"], s["request_errors"]]


def flush_stats(store: Store, updates: Sequence[StatsUpdate], per_batch: int = 1) -> None:
    for start in range(0, len(updates), per_batch):
        store.flush(FlushBatch(stats=tuple(updates[start : start + per_batch])))


@pytest.fixture
def agent(engine: sa.Engine) -> Agent:
    seed = make_seed_lb(engine)
    return Agent(seed.listener, seed.amphora)


def test_in_order_heartbeats_add_up(engine: sa.Engine, store: Store, agent: Agent) -> None:
    beats = [agent.heartbeat() for _ in range(10)]
    flush_stats(store, beats)
    assert totals(engine, agent) == agent.totals
    s = stats_of(engine, agent.listener, agent.amp)
    assert (s["last_seq"], s["active_connections"]) == (10, beats[-1].active_connections)


def test_duplicates_count_once(engine: sa.Engine, store: Store, agent: Agent) -> None:
    beats = [agent.heartbeat() for _ in range(6)]
    doubled = [b for b in beats for _ in range(2)]
    flush_stats(store, doubled, per_batch=3)  # duplicates within and across batches
    flush_stats(store, beats)  # and all of them again later
    assert totals(engine, agent) == agent.totals


def test_an_older_heartbeat_after_a_newer_is_ignored(
    engine: sa.Engine, store: Store, agent: Agent
) -> None:
    beats = [agent.heartbeat() for _ in range(5)]
    flush_stats(store, [beats[0], beats[3], beats[1], beats[2], beats[4]])
    assert totals(engine, agent) == agent.totals
    s = stats_of(engine, agent.listener, agent.amp)
    assert s["active_connections"] == beats[4].active_connections


def test_a_batch_is_applied_in_seq_order_whatever_its_order(
    engine: sa.Engine, store: Store, agent: Agent
) -> None:
    beats = [agent.heartbeat() for _ in range(5)]
    agent.reload()
    beats += [agent.heartbeat() for _ in range(3)]
    shuffled = beats[:]
    random.Random(7).shuffle(shuffled)
    flush_stats(store, shuffled, per_batch=len(shuffled))
    assert totals(engine, agent) == agent.totals


def test_lost_heartbeats_lose_no_bytes(engine: sa.Engine, store: Store, agent: Agent) -> None:
    beats = [agent.heartbeat() for _ in range(12)]
    flush_stats(store, [b for b in beats if b.seq % 3 != 2])  # every third lost
    assert totals(engine, agent) == agent.totals


def test_epoch_change_counts_the_new_counters_from_zero(
    engine: sa.Engine, store: Store, agent: Agent
) -> None:
    before = [agent.heartbeat() for _ in range(4)]
    agent.reload()
    after = [agent.heartbeat() for _ in range(3)]
    # The new epoch's counters are smaller than the old ones: still exact.
    assert after[0].bytes_in < before[-1].bytes_in
    flush_stats(store, before + after)
    assert totals(engine, agent) == agent.totals


def test_counter_going_backwards_in_one_epoch_is_taken_as_a_restart(
    engine: sa.Engine, store: Store, agent: Agent
) -> None:
    li, a = agent.listener, agent.amp
    flush_stats(store, [StatsUpdate(li, a, 1, 1, 0, 1000, 0, 0, 0)])
    flush_stats(store, [StatsUpdate(li, a, 2, 1, 0, 300, 0, 0, 0)])
    assert totals(engine, agent)[0] == 1300


def test_two_managers_sharing_an_amphora_count_every_byte_once(
    engine: sa.Engine, store: Store, agent: Agent
) -> None:
    beats = [agent.heartbeat() for _ in range(40)]
    rng = random.Random(3)
    shares: list[list[StatsUpdate]] = [[], []]
    for b in beats:
        shares[rng.randrange(2)].append(b)
    for share in shares:
        rng.shuffle(share)
    other = Store(engine)
    # Interleave the two managers' flushes, each in its own arbitrary order.
    while shares[0] or shares[1]:
        for who, mgr in ((0, store), (1, other)):
            take = [shares[who].pop() for _ in range(min(rng.randint(1, 4), len(shares[who])))]
            if take:
                mgr.flush(FlushBatch(stats=tuple(take)))
    last = beats[-1]
    final = [last.bytes_in, last.bytes_out, last.total_connections, last.request_errors]
    assert totals(engine, agent) == final == agent.totals


def test_delta_updates_add_up_in_any_order(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine)
    li, a = seed.listener, seed.amphora
    deltas = [StatsUpdate(li, a, seq, 0, seq, 100, 10, 1, 0, is_delta=True) for seq in range(1, 6)]
    flush_stats(store, [deltas[2], deltas[0], deltas[4], deltas[1], deltas[3]])
    s = stats_of(engine, li, a)
    assert (s["bytes_in"], s["bytes_out"], s["total_connections"]) == (500, 50, 5)
    assert (s["last_seq"], s["active_connections"]) == (5, 5)


def test_statistics_are_per_listener_and_amphora(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine, amphorae=2, listeners=2)
    agents = [
        Agent(li, amp, seed=i)
        for i, (li, amp) in enumerate((li, amp) for li in seed.listeners for amp in seed.amphorae)
    ]
    for _ in range(5):
        store.flush(FlushBatch(stats=tuple(ag.heartbeat() for ag in agents)))
    for ag in agents:
        assert totals(engine, ag) == ag.totals


# --- one transaction, a handful of statements ------------------------------


def test_a_big_flush_is_a_handful_of_statements(engine: sa.Engine, store: Store) -> None:
    seeds = make_fleet(engine, 300)
    executed: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, executemany):
        executed.append(statement)

    now = utcnow()
    batch = FlushBatch(
        health=tuple(HealthBump(s.amphora, now) for s in seeds),
        reports=tuple(report(s, s.amphora, 1, C.ERROR) for s in seeds),
        stats=tuple(StatsUpdate(s.listener, s.amphora, 1, 1, 1, 10, 20, 3, 0) for s in seeds),
    )
    result = store.flush(batch)
    # upsert health, FAILOVER_STOPPED check, lock reports, upsert reports, re-read the
    # reports that were absent, one UPDATE per status table (4), stats upsert
    assert result.statements == 10
    writes = [s for s in executed if not s.lstrip().upper().startswith(("BEGIN", "SAVEPOINT"))]
    assert len(writes) == 10
    assert (result.health_rows, result.status_rows, result.stats_rows) == (300, 1500, 300)
    assert result.reports_won == 300


def test_a_failing_flush_writes_nothing(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine)
    amp = make_amphora(engine, with_health=False)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _fail(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE MEMBER"):
            raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        store.flush(
            FlushBatch(
                health=(HealthBump(amp, utcnow()),),
                reports=(report(seed, seed.amphora, 1, C.ERROR),),
            )
        )
    assert health_of(engine, amp) is None
    assert report_row(engine, seed.amphora) is None
    sa.event.remove(engine, "before_cursor_execute", _fail)


def test_concurrent_flushes_from_two_managers(engine: sa.Engine) -> None:
    """Overlapping batches from two engines at once: no deadlock, exact totals.

    (On SQLite the second writer waits on the busy timeout.)
    """
    seeds = make_fleet(engine, 30)
    agents = [Agent(s.listener, s.amphora, seed=i) for i, s in enumerate(seeds)]
    beats = [ag.heartbeat() for _ in range(6) for ag in agents]
    rng = random.Random(5)
    shares: list[list[StatsUpdate]] = [[], []]
    for b in beats:
        shares[rng.randrange(2)].append(b)
    errors: list[BaseException] = []

    def manager(share: list[StatsUpdate]) -> None:
        engine2 = make_test_engine(
            str(engine.url.render_as_string(hide_password=False)), create=False
        )
        mgr = Store(engine2)
        try:
            for start in range(0, len(share), 25):
                part = share[start : start + 25]
                now = utcnow()
                mgr.flush(
                    FlushBatch(
                        health=tuple(HealthBump(b.amphora_id, now) for b in part),
                        stats=tuple(part),
                    )
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            engine2.dispose()

    threads = [threading.Thread(target=manager, args=(sh,)) for sh in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for ag in agents:
        assert totals(engine, ag) == ag.totals


def test_unknown_ids_are_harmless(store: Store) -> None:
    stray = new_id()
    determined = (StatusWrite("listener", stray, C.ERROR),)
    result = store.flush(
        FlushBatch(
            reports=(
                ReportWrite(stray, 1, status.digest(determined), determined, utcnow(), True, True),
            ),
            stats=(StatsUpdate(stray, stray, 1, 1, 0, 1, 1, 1, 0),),
        )
    )
    assert result.refused == ()

"""One truth in the database, through the real daemon (issue 8).

Each test runs ``healthmgr serve`` as a subprocess against a real database
and sends it real, signed UDP heartbeats:

- a poison heartbeat (counters at and past the BIGINT range) spoils only its
  own amphora's statistics: every flush lands, a member DOWN elsewhere is
  written, a dead amphora is failed over, the refused value is counted and
  logged with its amphora, and the daemon stops cleanly;
- R27 in the daemon: the amphora of a DELETED load balancer is not healthy;
- a heartbeat processed ``heartbeat_interval`` or more after it arrived
  writes no status (as Octavia) and is counted ``late``;
- an unreadable row in a topology load is left out and reported; the other
  amphorae of the same batch load and get their statuses.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.db.flush.statements import MAX_COUNTER
from healthmgr.wire.ids import Id, id_str
from healthmgr.wire.values import MemberState
from tests.db.factories import make_amphora, make_seed_lb, new_id, utcnow
from tests.db.test_store_poison import _refuse_big_counters
from tests.manager.conftest import SQLITE_ONLY, SeededDb, agent_for
from tests.manager.harness import Agent, Beater, RunningDaemon, start_daemon, write_config

TIMEOUT = 2.0


def _status(db: SeededDb, table: str, obj: Id) -> str:
    return str(db.scalar(f"SELECT operating_status FROM {table} WHERE id = :i", i=id_str(obj)))


def _last_update(db: SeededDb, amphora: Id) -> dt.datetime | None:
    value = db.scalar(
        "SELECT last_update FROM amphora_health WHERE amphora_id = :a", a=id_str(amphora)
    )
    if isinstance(value, str):  # SQLite through text(): the stored text
        return dt.datetime.fromisoformat(value)
    return value  # type: ignore[return-value]


def _bytes_in(db: SeededDb, agent: Agent) -> tuple[object, object] | None:
    rows = db.rows(
        "SELECT bytes_in, counters_epoch FROM listener_statistics"
        " WHERE listener_id = :l AND amphora_id = :a",
        l=id_str(agent.listener),
        a=id_str(agent.amphora),
    )
    return (rows[0][0], rows[0][1]) if rows else None


def _clean_stop(daemon: RunningDaemon) -> None:
    code = daemon.stop()
    tail = "\n".join(daemon.lines[-20:])
    assert code == 0, tail
    assert not [e for e in daemon.events() if e.get("event", "").startswith("pending writes lost")]
    assert [e for e in daemon.events() if e.get("event") == "healthmgr stopped"], tail


# --- 1. the poison heartbeat --------------------------------------------------------


# What each database does with a value past BIGINT (the saturation, the refused row) is
# proven on all three by tests/db/test_store_poison.py; here the daemon's part (metrics,
# logs, the other amphorae's flushes): SQLite by default, every database in CI's pass.
@SQLITE_ONLY
def test_poison_counters_spoil_only_their_own_statistics(
    seeded: SeededDb, config_dir: Path
) -> None:
    """Amphora V signs bytes_in = 2**63-1 under epoch 1, again under epoch 2 (a
    later flush), then 2**64-1 (the wire's maximum). Meanwhile M's member goes
    DOWN, D dies, W jumps to seq 2**63 (a report order no BIGINT holds), and O
    keeps beating: every flush lands, M's member is ERROR, D is failed over,
    every live amphora's last_update moves, V's total stops at 2**63-1 (an
    integer, on SQLite too), the refused rows are counted and logged with
    their amphora, and the daemon stops cleanly."""
    others = [
        make_seed_lb(seeded.engine, operating_status="OFFLINE", with_health=False) for _ in range(4)
    ]
    v, m, d, o, w = seeded.agent(), *(agent_for(s) for s in others)
    cfg = write_config(
        config_dir / "hm.toml",
        seeded.url,
        sections={
            "health_manager": {
                "heartbeat_timeout": TIMEOUT,
                "failover_threshold": "off",
                "manager_id": "hm-poison",
            }
        },
    )
    daemon = start_daemon(cfg)
    top = MAX_COUNTER
    try:
        with Beater([daemon], [v, m, d, o, w], interval=0.2) as beater:
            daemon.until(
                lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 5,
                what="all five amphorae reported",
            )
            daemon.until(
                lambda: _status(seeded, "member", w.members[1]) == "ONLINE",
                what="W's statuses written",
            )
            with beater.changing():
                v.counters = [top, 5, 5, 0]
            daemon.until(lambda: _bytes_in(seeded, v) == (top, 1), what="2**63-1 under epoch 1")
            with beater.changing():
                v.epoch = 2  # a reload: the same value again, counted in full
            daemon.until(lambda: _bytes_in(seeded, v) == (top, 2), what="saturated under epoch 2")

            before = {a.amphora: _last_update(seeded, a.amphora) for a in (v, m, o, w)}
            with beater.changing():
                v.counters = [2**64 - 1, 6, 6, 0]  # past BIGINT: refused, statistics only
                v.states = {v.members[1]: MemberState.DOWN}  # ...its statuses still land
                m.states = {m.members[1]: MemberState.DOWN}
                beater.agents.remove(d)  # D dies
                w.seq = 2**63  # its report (and statistics) refused; its health kept
                w.states = {w.members[1]: MemberState.DOWN}
            daemon.until(
                lambda: (
                    daemon.metric(
                        "healthmgr_rows_rejected_total",
                        table="listener_statistics",
                        reason="out_of_range",
                    )
                    >= 1
                ),
                what="the refused value counted",
            )
            refused = daemon.wait_for_log("row refused", amphora_id=id_str(v.amphora))
            assert refused["table"] == "listener_statistics"
            assert refused["reason"] == "out_of_range"
            daemon.until(
                lambda: (
                    daemon.metric(
                        "healthmgr_rows_rejected_total",
                        table="healthmgr_amphora",
                        reason="out_of_range",
                    )
                    >= 1
                ),
                what="W's report refused",
            )
            daemon.wait_for_log(
                "row refused", amphora_id=id_str(w.amphora), table="healthmgr_amphora"
            )
            daemon.until(
                lambda: _status(seeded, "member", m.members[1]) == "ERROR",
                what="M's member DOWN written as ERROR",
            )
            daemon.until(
                lambda: (
                    seeded.scalar("SELECT amphora_id FROM failover_request") == id_str(d.amphora)
                ),
                what="D failed over",
                timeout=20,
            )
            # V's heartbeats still count for health and statuses; so do the others'.
            for agent in (v, m, o, w):
                daemon.until(
                    lambda a=agent: (
                        (_last_update(seeded, a.amphora) or dt.datetime.min) > before[a.amphora]
                    ),
                    what="last_update moving",
                )
            daemon.until(
                lambda: _status(seeded, "member", v.members[1]) == "ERROR",
                what="V's own member DOWN written",
            )
            assert _status(seeded, "pool", m.pool) == "DEGRADED"
            assert _status(seeded, "member", w.members[1]) == "ONLINE"  # W's DOWN refused
        assert _bytes_in(seeded, v) == (top, 2)
        (value,) = seeded.rows(
            "SELECT bytes_in FROM listener_statistics WHERE amphora_id = :a",
            a=id_str(v.amphora),
        )[0]
        assert type(value) is int and value == top
        if seeded.url.startswith("sqlite"):
            kind = seeded.scalar(
                "SELECT typeof(bytes_in) FROM listener_statistics WHERE amphora_id = :a",
                a=id_str(v.amphora),
            )
            assert kind == "integer"
        assert [row[0] for row in seeded.rows("SELECT amphora_id FROM failover_request")] == [
            id_str(d.amphora)
        ]
        assert daemon.metric("healthmgr_flush_failures_total") == 0
        assert not [e for e in daemon.events() if "flush failed" in e.get("event", "")]
        assert daemon.metric("healthmgr_heartbeats_total", result="accepted") > 0
    finally:
        _clean_stop(daemon)


# The bisection of a refused flush: on all three by tests/db/test_store_poison.py.
@SQLITE_ONLY
def test_a_row_the_database_refuses_is_isolated_in_the_daemon(
    seeded: SeededDb, config_dir: Path
) -> None:
    """The database itself refuses one amphora's statistics (a constraint of its
    own, which the manager cannot check first) while, in the same flush,
    another amphora's member goes DOWN: the flush is bisected, the refused row
    is counted (``constraint``) and logged with its amphora, everything else
    lands, the refusing amphora's health and statuses included, and no flush
    fails."""
    _refuse_big_counters(seeded.engine)  # bytes_in above 1,000,000 refused
    fleet = [seeded.seed] + [
        make_seed_lb(seeded.engine, operating_status="OFFLINE", with_health=False) for _ in range(3)
    ]
    agents = [agent_for(s) for s in fleet]
    bad, down = agents[1], agents[2]
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))
    try:
        daemon.send(*(a.datagram(add=(10, 10, 1, 0)) for a in agents))
        daemon.until(
            lambda: seeded.scalar("SELECT COUNT(*) FROM listener_statistics") == 4,
            what="everyone's statistics",
        )
        # One burst, so that one flush holds all of it.
        daemon.send(
            *(
                a.datagram(add=(5_000_000, 0, 0, 0))
                if a is bad
                else a.datagram(members={a.members[1]: MemberState.DOWN}, add=(10, 10, 1, 0))
                if a is down
                else a.datagram(add=(10, 10, 1, 0))
                for a in agents
            )
        )
        daemon.until(
            lambda: (
                daemon.metric(
                    "healthmgr_rows_rejected_total",
                    table="listener_statistics",
                    reason="constraint",
                )
                == 1
            ),
            what="the refused row counted",
        )
        said = daemon.wait_for_log("row refused", amphora_id=id_str(bad.amphora))
        assert said["reason"] == "constraint" and said["table"] == "listener_statistics"
        daemon.until(
            lambda: _status(seeded, "member", down.members[1]) == "ERROR",
            what="the DOWN member of the same flush",
        )
        for a in agents:  # the refused update left the total as it was
            assert _bytes_in(seeded, a) == (10 if a is bad else 20, 1)
        assert _status(seeded, "member", bad.members[1]) == "ONLINE"
        assert daemon.metric("healthmgr_flush_failures_total") == 0
    finally:
        _clean_stop(daemon)


# --- 3. R27 in the daemon ---------------------------------------------------------------


# The loader's part (a DELETED load balancer kept without its objects) is proven on all
# three by tests/db/test_store_topology.py; the verdict is the view's: SQLite only.
@SQLITE_ONLY
def test_amphora_of_a_deleted_load_balancer_is_not_healthy(
    seeded: SeededDb, config_dir: Path
) -> None:
    """R27 as the daemon runs it: the loader keeps a DELETED load balancer
    (without its objects), so its amphora reporting no listeners is counted
    ``unhealthy`` and its amphora_health is not refreshed; a spare amphora
    (no load balancer) reporting no listeners is healthy."""
    deleted = make_seed_lb(
        seeded.engine, provisioning_status="DELETED", operating_status="ONLINE", with_health=False
    )
    spare = make_amphora(seeded.engine, with_health=False)
    gone, idle, live = agent_for(deleted), Agent(spare, new_id(), new_id(), ()), seeded.agent()
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))
    try:
        for _ in range(3):
            daemon.send(
                gone.datagram(listeners=False), idle.datagram(listeners=False), live.datagram()
            )
            time.sleep(0.1)
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="unhealthy") == 3,
            what="three unhealthy heartbeats",
        )
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="accepted") == 6,
            what="the spare's and the live one's accepted",
        )
        daemon.until(lambda: _last_update(seeded, spare) is not None, what="spare refreshed")
        daemon.until(lambda: _last_update(seeded, live.amphora) is not None, what="live refreshed")
        time.sleep(0.3)  # several flushes: a refresh of the deleted one would show by now
        assert _last_update(seeded, gone.amphora) is None
        assert _status(seeded, "load_balancer", deleted.load_balancer) == "ONLINE"  # untouched
        assert _status(seeded, "member", deleted.members[0]) == "ONLINE"
        assert _status(seeded, "member", live.members[0]) == "ONLINE"
        said = daemon.wait_for_log(
            "heartbeat from an amphora whose load balancer is DELETED:"
            " not healthy, nothing written (R27)",
            amphora_id=id_str(gone.amphora),
        )
        assert said["lb_id"] == id_str(deleted.load_balancer)
        assert daemon.metric("healthmgr_listener_count_mismatches_total") == 0
    finally:
        _clean_stop(daemon)


# --- 4. late heartbeats -----------------------------------------------------------------

INTERVAL = 0.5
HOLD = 3 * INTERVAL  # the topology load waits this long: the heartbeat is processed late


@contextmanager
def amphora_table_locked(url: str) -> Iterator[None]:
    """Another session holds the amphora table so that no one can read it."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "postgresql":
        import psycopg

        conninfo = u.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo) as conn:  # one transaction until the block ends
            conn.execute("LOCK TABLE amphora IN ACCESS EXCLUSIVE MODE")
            yield
            conn.rollback()
        return
    import pymysql

    conn = pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
    )
    with conn, conn.cursor() as cur:
        cur.execute("LOCK TABLES amphora WRITE")
        try:
            yield
        finally:
            cur.execute("UNLOCK TABLES")


# Lateness is the view's verdict; the lock only holds the load back: one server by
# default, both in CI's pass.
@pytest.mark.databases("postgresql")
def test_heartbeat_processed_too_late_writes_no_status(
    server_seeded: SeededDb, config_dir: Path
) -> None:
    """A new amphora's first heartbeat (member DOWN) waits for its topology while
    another session holds the amphora table for 3 heartbeat intervals: when it
    is processed it is counted ``late`` and logged with its amphora, and
    neither the member status nor amphora_health is written (as Octavia). A
    fresh heartbeat afterwards is applied."""
    db = server_seeded
    agent, member = db.agent(), db.seed.members[1]
    cfg = write_config(
        config_dir / "hm.toml",
        db.url,
        sections={
            "health_manager": {
                "heartbeat_interval": INTERVAL,
                "heartbeat_timeout": TIMEOUT,
            }
        },
    )
    daemon = start_daemon(cfg)
    try:
        with amphora_table_locked(db.url):
            daemon.send(agent.datagram(members={member: MemberState.DOWN}))
            time.sleep(HOLD)
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="late") == 1,
            what="the heartbeat counted late",
        )
        said = daemon.wait_for_log(
            "heartbeat processed too late; no status and no health written",
            amphora_id=id_str(agent.amphora),
        )
        assert said["delay"] >= INTERVAL
        time.sleep(0.3)  # several flushes: a status written for it would show by now
        assert _status(db, "member", member) == "OFFLINE"
        assert _last_update(db, agent.amphora) is None
        assert daemon.metric("healthmgr_heartbeats_total", result="accepted") == 0

        daemon.send(agent.datagram(members={member: MemberState.DOWN}))  # on time
        daemon.until(lambda: _status(db, "member", member) == "ERROR", what="fresh DOWN written")
        assert _last_update(db, agent.amphora) is not None
        assert daemon.metric("healthmgr_heartbeats_total", result="late") == 1
    finally:
        _clean_stop(daemon)


# --- 5. one bad row in a topology load ----------------------------------------------------


def _bad_member(db: SeededDb, pool: Id) -> str:
    """A member row whose id is not a UUID (written by a broken API or by hand)."""
    bad = "not-a-uuid-but-36-characters-long!!"
    now = utcnow()
    db.execute(
        "INSERT INTO member (id, pool_id, name, ip_address, protocol_port, weight, backup,"
        " enabled, provisioning_status, operating_status, created_at, updated_at)"
        " VALUES (:id, :pool, 'bad', '127.0.0.9', 8009, 1, :f, :t, 'ACTIVE', 'OFFLINE',"
        " :now, :now)",
        id=bad,
        pool=id_str(pool),
        f=False,
        t=True,
        now=now,
    )
    return bad


# The loader leaving the row out: on all three by tests/db/test_store_poison.py.
@SQLITE_ONLY
def test_unreadable_member_row_is_left_out_and_the_batch_loads(
    seeded: SeededDb, config_dir: Path
) -> None:
    """Five new amphorae send their first heartbeats at once (one topology
    load); one of their pools holds a member whose id is not a UUID. Every
    amphora gets its statuses and its amphora_health, the bad row is counted
    (``member``, ``unreadable``) and logged, and no load fails."""
    fleet = [seeded.seed] + [
        make_seed_lb(seeded.engine, operating_status="OFFLINE", with_health=False) for _ in range(4)
    ]
    agents = [agent_for(s) for s in fleet]
    bad = _bad_member(seeded, fleet[2].pool)
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))
    try:
        daemon.send(*(a.datagram() for a in agents))
        for a in agents:
            daemon.until(
                lambda a=a: _status(seeded, "member", a.members[1]) == "ONLINE",
                what="statuses of every amphora written",
            )
        daemon.until(
            lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == len(agents),
            what="every amphora_health written",
        )
        assert (
            daemon.metric("healthmgr_rows_rejected_total", table="member", reason="unreadable") >= 1
        )
        said = daemon.wait_for_log("unreadable row left out of a topology", key=bad)
        assert said["table"] == "member" and said["reason"] == "unreadable"
        # What the operator needs to find it: the amphora and the load balancer.
        assert said["amphora_id"] == id_str(fleet[2].amphora)
        assert id_str(fleet[2].load_balancer) in said["detail"]
        assert "is not a UUID" in said["detail"]
        assert daemon.metric("healthmgr_heartbeats_total", result="accepted") == len(agents)
        assert not [e for e in daemon.events() if e.get("event") == "topology load failed"]
        assert _status(seeded, "pool", fleet[2].pool) == "ONLINE"
        assert (
            str(seeded.scalar("SELECT operating_status FROM member WHERE id = :i", i=bad))
            == "OFFLINE"
        )
    finally:
        _clean_stop(daemon)

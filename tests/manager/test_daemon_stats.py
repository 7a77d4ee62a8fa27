"""Listener statistics are exact through the real daemon.

Agents send absolute counters; the manager turns them into deltas in the
database, conditioned on the heartbeat's sequence number, so that loss,
duplication, reordering, a HAProxy reload (new counters epoch) and several
managers each seeing a share of the heartbeats neither lose nor double count.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from healthmgr.wire.ids import id_str
from healthmgr.wire.native import encode_native
from healthmgr.wire.values import Heartbeat
from tests.db.factories import make_seed_lb
from tests.manager.conftest import SQLITE_AND_PG, SeededDb, migrated_engine
from tests.manager.harness import Agent, RunningDaemon, start_daemon, write_config
from tests.manager.test_daemon_multi import start_managers

Counters = tuple[int, int, int, int]  # bytes_in, bytes_out, total_connections, request_errors


def signed(agent: Agent, seq: int, epoch: int, counters: Counters, active: int) -> bytes:
    """A native heartbeat of ``agent`` with exactly these counters, signed now."""
    hb: Heartbeat = agent.heartbeat(seq=seq)
    (listener,) = hb.listeners
    listener = msgspec.structs.replace(
        listener,
        current_connections=active,
        bytes_in=counters[0],
        bytes_out=counters[1],
        total_connections=counters[2],
        request_errors=counters[3],
    )
    hb = msgspec.structs.replace(hb, counters_epoch=epoch, listeners=(listener,))
    return encode_native(hb, agent.master.id, agent.key)


def stats_row(db: SeededDb, agent: Agent) -> tuple[int, ...] | None:
    rows = db.rows(
        "SELECT bytes_in, bytes_out, total_connections, request_errors, active_connections,"
        " counters_epoch, last_seq FROM listener_statistics"
        " WHERE listener_id = :l AND amphora_id = :a",
        l=id_str(agent.listener),
        a=id_str(agent.amphora),
    )
    return tuple(rows[0]) if rows else None


def last_seq(db: SeededDb, agent: Agent) -> Callable[[], int]:
    return lambda: (stats_row(db, agent) or (0,) * 7)[6]


def epoch1(seq: int) -> Counters:
    return (1000 * seq + 7, 3000 * seq, 10 * seq, seq // 2)


def epoch2(seq: int) -> Counters:  # after a reload: counters start again, small
    n = seq - 6
    return (50 * n, 70 * n, n, 0)


# The conditioned statistics writes are proven on all three in-process by
# tests/db/test_store_flush.py; MariaDB through real daemons below and with --every-database.
@SQLITE_AND_PG
def test_counters_exact_through_loss_duplicates_reordering_and_reload(
    seeded: SeededDb, config_dir: Path
) -> None:
    agent = seeded.agent()
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))

    def send(seq: int) -> None:
        epoch, counters = (1, epoch1(seq)) if seq <= 6 else (2, epoch2(seq))
        daemon.send(signed(agent, seq, epoch, counters, active=seq * 10))

    try:
        send(1)
        daemon.until(lambda: last_seq(seeded, agent)() == 1, what="seq 1 written")
        send(3)
        daemon.until(lambda: last_seq(seeded, agent)() == 3, what="seq 3 written")
        send(2)  # late: arrives after 3 was committed
        send(3)  # duplicate: dropped as a replay
        daemon.until(
            lambda: (
                daemon.metric("healthmgr_heartbeats_total", result="replayed") == 1
                and daemon.metric("healthmgr_heartbeats_total", result="accepted") == 3
            ),
            what="2 accepted, 3 replayed",
        )
        # 4 is lost; 6 overtakes 5.
        send(6)
        send(5)
        daemon.until(lambda: last_seq(seeded, agent)() == 6, what="seq 6 written")
        time.sleep(0.3)  # several flush intervals: a late 5 or 2 would show by now
        assert stats_row(seeded, agent) == (*epoch1(6), 60, 1, 6)

        # HAProxy reloaded: epoch 2, counters restart; 8 overtakes 7.
        send(8)
        send(7)
        daemon.until(lambda: last_seq(seeded, agent)() == 8, what="seq 8 written")
        time.sleep(0.3)
        total = tuple(a + b for a, b in zip(epoch1(6), epoch2(8), strict=True))
        assert stats_row(seeded, agent) == (*total, 80, 2, 8)
    finally:
        assert daemon.stop() == 0


# Proven on all three in-process by tests/db/test_store_flush.py (the same 40 heartbeats
# shared by two managers); here through two real daemons: one server.
@pytest.mark.databases("mysql")
def test_two_managers_sharing_one_amphora_count_every_byte_once(
    server_db_url: str, config_dir: Path
) -> None:
    engine = migrated_engine(server_db_url)
    db = SeededDb(
        server_db_url, engine, make_seed_lb(engine, operating_status="OFFLINE", with_health=False)
    )
    agent = db.agent()
    rng = random.Random(20240607)
    last = 40
    counters: dict[int, Counters] = {}
    running = [0, 0, 0, 0]
    for seq in range(1, last + 1):
        running = [c + rng.randrange(0, 5000) for c in running]
        counters[seq] = (running[0], running[1], running[2], running[3])
    daemons: list[RunningDaemon] = start_managers(server_db_url, config_dir, 2)
    try:
        # Warm both topology caches first (seq 1 to both), so that no heartbeat
        # waits for a topology load below and every one is counted.
        first = signed(agent, 1, 1, counters[1], active=1)
        for d in daemons:
            d.send(first)
        for d in daemons:
            d.until(lambda d=d: d.metric("healthmgr_tracked_amphorae") == 1, what="cache warm")
        order = list(range(2, last))
        for i in range(0, len(order) - 3, 4):  # reorder within windows of four
            window = order[i : i + 4]
            rng.shuffle(window)
            order[i : i + 4] = window
        lost = {5, 17, 26}
        for seq in [*order, last]:  # the last one gets through
            if seq in lost:
                continue
            datagram = signed(agent, seq, 1, counters[seq], active=seq)
            if seq % 7 == 0:  # sent to both: each manager accepts it once
                daemons[0].send(datagram)
                daemons[1].send(datagram)
            else:
                daemons[seq % 2].send(datagram)
            time.sleep(0.01)  # spread over several flushes of both managers
        daemons[0].until(lambda: last_seq(db, agent)() == last, what=f"seq {last} written")
        time.sleep(0.3)
        assert stats_row(db, agent) == (*counters[last], last, 1, last)
        accepted = sum(d.metric("healthmgr_heartbeats_total", result="accepted") for d in daemons)
        both = [seq for seq in range(1, last + 1) if seq % 7 == 0 or seq == 1]
        assert accepted == last - len(lost) + len(both)
    finally:
        codes = [d.stop() for d in daemons]
        engine.dispose()
    assert codes == [0, 0]

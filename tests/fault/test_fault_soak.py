"""Fault injection against the real daemon: loss, duplication, reordering,
forged and replayed datagrams, and amphorae that die, all at once.

The fleet simulator (healthmgr/chaos/fleet.py) reports absolute counters that grow
with the sequence number (bytes_in = 1000*seq, ...), so whatever got through,
the totals in listener_statistics must equal the counters of the last
sequence the database recorded: exact, never doubled by a duplicate or a
replay, never lost with a dropped datagram. Dead amphorae must be failed
over exactly once; live ones never.

The default run is short; ``--run-slow`` runs the soak (more amphorae, more
rounds, PostgreSQL too).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.chaos.fleet import Faults, Fleet, Topology
from healthmgr.chaos.topology import insert_topology
from healthmgr.db.engine import make_engine
from healthmgr.db.migrate import upgrade
from healthmgr.wire.ids import id_str
from tests.manager.harness import MASTER, start_daemon, wait_until, write_config

FAULTS = Faults(
    drop=0.1, duplicate=0.1, reorder=0.1, forged=0.05, replay=0.1, dead=0.1, dead_after=4
)


def _soak(db_url: str, workdir: Path, *, amphorae: int, rounds: int) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    topology = Topology.generate(amphorae, seed=3)
    insert_topology(engine, topology)
    fleet = Fleet(topology, MASTER, faults=FAULTS, seed=3, interval_ms=500)
    cfg = write_config(
        workdir / "hm.toml",
        db_url,
        sections={
            "health_manager": {
                "heartbeat_interval": 0.5,
                "heartbeat_timeout": 3.0,
                "health_check_interval": 0.3,
                "flush_interval": 0.1,
                "manager_id": "soak",
                "sock_rlimit": 4 << 20,
                "failover_threshold": "off",
            }
        },
    )  # 10 % die together on purpose
    daemon = start_daemon(cfg)
    try:
        for r in range(rounds):
            # Spread each round over its interval, as a real fleet's agents are.
            datagrams = fleet.datagrams(r)
            for i in range(0, len(datagrams), 50):
                daemon.send(*datagrams[i : i + 50])
                time.sleep(0.02)
            time.sleep(max(0.0, 0.5 - 0.02 * (len(datagrams) // 50 + 1)))
        daemon.send(*fleet.flush())
        live = [a for i, a in enumerate(topology.amphorae) if i not in fleet.dead]
        dead = [a for i, a in enumerate(topology.amphorae) if i in fleet.dead]
        assert dead and fleet.counts.forged and fleet.counts.replayed and fleet.counts.dropped

        def requests() -> dict[str, int]:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT amphora_id, COUNT(*) FROM failover_request GROUP BY amphora_id")
                )
                return {a: n for a, n in rows}

        wait_until(lambda: len(requests()) >= len(dead), timeout=30, what="dead failed over")
        time.sleep(1.0)  # a further health check must not claim anything again
        results = [ln for ln in daemon.metrics().splitlines() if "heartbeats_total{" in ln]
        assert requests() == {id_str(a.id): 1 for a in dead}, "\n".join(results)

        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT amphora_id, last_seq, bytes_in, bytes_out, total_connections,"
                    " request_errors FROM listener_statistics"
                )
            ).all()
        stats = {r.amphora_id: r for r in rows}
        for amp in live:
            r = stats[id_str(amp.id)]
            seq = r.last_seq
            assert (r.bytes_in, r.bytes_out, r.total_connections, r.request_errors) == (
                1000 * seq,
                4000 * seq,
                10 * seq,
                seq,
            ), id_str(amp.id)
            assert seq >= rounds - 3  # the last rounds got through (one may be dropped)

        accepted = daemon.metric("healthmgr_heartbeats_total", result="accepted")
        assert accepted <= fleet.counts.honest
        assert (
            daemon.metric("healthmgr_heartbeats_total", result="bad_signature")
            == fleet.counts.forged
        )
        assert (
            daemon.metric("healthmgr_heartbeats_total", result="replayed")
            >= fleet.counts.duplicated
        )
    finally:
        assert daemon.stop() == 0
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_faults_short(db_url: str, tmp_path: Path) -> None:
    _soak(db_url, tmp_path, amphorae=40, rounds=10)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_faults_soak(db_url: str, tmp_path: Path) -> None:
    _soak(db_url, tmp_path, amphorae=400, rounds=60)

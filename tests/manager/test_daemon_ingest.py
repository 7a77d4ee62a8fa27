"""Unknown amphorae and the metrics endpoint of the real daemon."""

from __future__ import annotations

import re
from pathlib import Path

from healthmgr.manager.metrics import FAILOVER_OUTCOMES, HEARTBEAT_RESULTS
from healthmgr.wire.ids import id_str
from tests.db.factories import make_seed_lb, new_id
from tests.manager.conftest import SQLITE_AND_PG, SeededDb, ago
from tests.manager.harness import MASTER, Agent, start_daemon, write_config


@SQLITE_AND_PG
def test_validly_signed_heartbeat_of_an_unknown_amphora_writes_nothing(
    seeded: SeededDb, config_dir: Path
) -> None:
    s = seeded.seed
    # Signed with the right master key, naming the seed's objects, but no such amphora.
    stranger = Agent(new_id(), s.listener, s.pool, s.members, master=MASTER)
    daemon = start_daemon(write_config(config_dir / "hm.toml", seeded.url))
    try:
        daemon.send(stranger.datagram(add=(10, 20, 1, 0)))
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="unknown_amphora") == 1,
            what="counted unknown_amphora",
        )
        # And again: the answer is cached, not a database read per heartbeat.
        refreshes = daemon.metric("healthmgr_topology_refreshes_total")
        daemon.send(stranger.datagram())
        daemon.until(
            lambda: daemon.metric("healthmgr_heartbeats_total", result="unknown_amphora") == 2,
            what="counted unknown_amphora twice",
        )
        assert daemon.metric("healthmgr_topology_refreshes_total") == refreshes
        assert daemon.metric("healthmgr_heartbeats_total", result="accepted") == 0
        # Logged, with the amphora and where it came from; once (rate-limited).
        event = daemon.wait_for_log(
            "verified heartbeat from an amphora that is not in the database; ignored"
        )
        assert event["amphora_id"] == id_str(stranger.amphora)
        assert event["source"].startswith("127.0.0.1:")
        lines = [e for e in daemon.events() if e.get("reason") == "unknown_amphora"]
        assert len(lines) == 1
        for table in ("amphora_health", "listener_statistics", "failover_request"):
            assert seeded.scalar(f"SELECT COUNT(*) FROM {table}") == 0, table
        statuses = seeded.rows(
            "SELECT operating_status FROM member UNION ALL SELECT operating_status FROM pool"
            " UNION ALL SELECT operating_status FROM listener"
            " UNION ALL SELECT operating_status FROM load_balancer"
        )
        assert {r[0] for r in statuses} == {"OFFLINE"}  # as seeded
    finally:
        assert daemon.stop() == 0


# The series docs/operations.md lists (metric -> labels that must be present).
DOCUMENTED = {
    "healthmgr_datagrams_received_total": [],
    "healthmgr_heartbeats_total": [f'result="{r}"' for r in HEARTBEAT_RESULTS],
    "healthmgr_processing_lag_seconds_bucket": ['le="+Inf"'],
    "healthmgr_commit_lag_seconds_bucket": ['le="+Inf"'],
    "healthmgr_flush_duration_seconds_bucket": ['le="+Inf"'],
    "healthmgr_flush_duration_seconds_count": [],
    "healthmgr_flush_batch_size_bucket": ['le="+Inf"'],
    "healthmgr_flush_failures_total": [],
    "healthmgr_stale_amphorae": [],
    "healthmgr_tracked_amphorae": [],
    "healthmgr_circuit_breaker_open": [],
    "healthmgr_failovers_total": [f'outcome="{o}"' for o in FAILOVER_OUTCOMES],
    "healthmgr_topology_refreshes_total": [],
    "healthmgr_build_info": ["version=", "manager_id="],
    "process_resident_memory_bytes": [],
}


@SQLITE_AND_PG
def test_metrics_endpoint_exposes_the_documented_series(seeded: SeededDb, config_dir: Path) -> None:
    make_seed_lb(seeded.engine, last_update=ago(3600))  # a long-dead amphora
    cfg = write_config(
        config_dir / "hm.toml", seeded.url, sections={"health_manager": {"heartbeat_timeout": 2.0}}
    )
    daemon = start_daemon(cfg)
    try:
        # One heartbeat, then silence: this amphora dies too.
        daemon.send(seeded.agent().datagram(), b"not a heartbeat")
        daemon.until(
            lambda: daemon.metric("healthmgr_failovers_total", outcome="requested") == 2,
            what="both failed over",
        )
        text = daemon.metrics()
        for name, labels in DOCUMENTED.items():
            lines = [line for line in text.splitlines() if re.match(rf"{name}[{{ ]", line)]
            assert lines, f"{name} missing from /metrics"
            for label in labels:
                assert any(label in line for line in lines), f"{name} has no {label}"
        assert daemon.metric("healthmgr_heartbeats_total", result="accepted") == 1
        assert daemon.metric("healthmgr_heartbeats_total", result="bad_magic") == 1
        assert daemon.metric("healthmgr_datagrams_received_total") == 2
        assert daemon.metric("healthmgr_flush_duration_seconds_count") >= 1
        assert daemon.metric("healthmgr_commit_lag_seconds_count") == 1
        assert daemon.metric("healthmgr_tracked_amphorae") == 1
        assert daemon.metric("healthmgr_circuit_breaker_open") == 0
        # Claimed amphorae are busy: the next health check counts none stale.
        daemon.until(lambda: daemon.metric("healthmgr_stale_amphorae") == 0, what="0 stale")
        assert "# TYPE healthmgr_heartbeats_total counter" in text
        assert "# TYPE healthmgr_flush_duration_seconds histogram" in text
    finally:
        assert daemon.stop() == 0

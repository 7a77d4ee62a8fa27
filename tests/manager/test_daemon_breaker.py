"""The failover circuit breaker through the real daemon.

When as many amphorae are stale as ``failover_threshold``, the likely cause is
on our side (network, database, the managers): no failover starts, the stale
amphorae become FAILOVER_STOPPED, and they return to ALLOCATED by themselves
when their heartbeats come back.
"""

from __future__ import annotations

from pathlib import Path

from healthmgr.wire.ids import id_str
from tests.db.factories import make_fleet
from tests.manager.conftest import SQLITE_ONLY, SeededDb, agent_for, ago
from tests.manager.harness import Beater, start_daemon, wait_until, write_config


def _statuses(db: SeededDb, amphorae: list[bytes]) -> list[str]:
    return [
        str(db.scalar("SELECT status FROM amphora WHERE id = :i", i=id_str(a))) for a in amphorae
    ]


# The breaker is the health check's judgment; the writes it makes (FAILOVER_STOPPED, and
# back to ALLOCATED on a heartbeat) are proven on all three databases by
# tests/db/test_store_claims.py: SQLite by default, every database in CI's pass.
@SQLITE_ONLY
def test_breaker_stops_failovers_then_amphorae_recover_by_themselves(
    seeded: SeededDb, config_dir: Path
) -> None:
    fleet = make_fleet(seeded.engine, 3, last_update=ago(3600))
    amphorae = [s.amphora for s in fleet]
    cfg = write_config(
        config_dir / "hm.toml",
        seeded.url,
        sections={"health_manager": {"heartbeat_timeout": 2.0, "failover_threshold": 2}},
    )
    daemon = start_daemon(cfg)
    try:
        wait_until(
            lambda: _statuses(seeded, amphorae) == ["FAILOVER_STOPPED"] * 3,
            what="all three FAILOVER_STOPPED",
        )
        event = daemon.wait_for_log("failover circuit breaker open: no failover starts")
        assert event["level"] == "error"
        assert event["failover_threshold"] == 2
        assert event["reason"].startswith("3 of 3 amphorae silent")
        assert daemon.metric("healthmgr_circuit_breaker_open") == 1
        assert daemon.metric("healthmgr_stale_amphorae") == 3
        assert daemon.metric("healthmgr_failovers_total", outcome="stopped_by_breaker") == 3
        assert seeded.scalar("SELECT COUNT(*) FROM failover_request") == 0
        assert seeded.scalar("SELECT COUNT(*) FROM amphora_health WHERE busy = :b", b=True) == 0

        # The partition heals: all three beat again, together.
        with Beater([daemon], [agent_for(s) for s in fleet]):
            wait_until(
                lambda: _statuses(seeded, amphorae) == ["ALLOCATED"] * 3,
                what="all three ALLOCATED again",
            )
            wait_until(
                lambda: daemon.metric("healthmgr_circuit_breaker_open") == 0, what="breaker closed"
            )
            wait_until(lambda: daemon.metric("healthmgr_stale_amphorae") == 0, what="none stale")
            daemon.wait_for_log("failover circuit breaker closed")
        for amphora in amphorae:  # the flush result says so, not only the database
            daemon.wait_for_log(
                "amphora beats again: FAILOVER_STOPPED -> ALLOCATED", amphora_id=id_str(amphora)
            )
        assert seeded.scalar("SELECT COUNT(*) FROM failover_request") == 0
        # Said once when it opened, not at every health check while it stayed open.
        opened = [
            e
            for e in daemon.events()
            if e.get("event", "").startswith("failover circuit breaker open")
        ]
        assert len(opened) == 1
    finally:
        assert daemon.stop() == 0

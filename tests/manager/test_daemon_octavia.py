"""Octavia's own heartbeat envelope through the real daemon (``octavia_compat``)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from healthmgr.wire import octavia
from healthmgr.wire.ids import id_str
from healthmgr.wire.values import MemberState
from tests.manager.conftest import SQLITE_ONLY, SeededDb
from tests.manager.harness import Agent, start_daemon, write_config

KEY = "octavia shared heartbeat key"


def octavia_datagram(
    agent: Agent, version: int, *, deltas: tuple[int, int] = (0, 0), **kw: object
) -> bytes:
    """What an Octavia amphora agent of ``version`` sends (v3: counters are deltas)."""
    hb = agent.heartbeat(**kw)  # type: ignore[arg-type]
    (listener,) = hb.listeners
    listener = msgspec.structs.replace(listener, bytes_in=deltas[0], bytes_out=deltas[1])
    hb = msgspec.structs.replace(hb, listeners=(listener,))
    return octavia.encode(octavia.heartbeat_to_message(hb, version), KEY.encode())


def _status(db: SeededDb, table: str, obj: bytes) -> str:
    return str(db.scalar(f"SELECT operating_status FROM {table} WHERE id = :i", i=id_str(obj)))


# The daemon's wiring of the Octavia decoder: SQLite only (the same flush is tested on all
# three databases in tests/db, and Octavia's schema on MariaDB in tests/octavia).
@SQLITE_ONLY
def test_octavia_heartbeats_update_statuses_and_stats_when_compat_is_on(
    seeded: SeededDb, config_dir: Path
) -> None:
    cfg = write_config(
        config_dir / "hm.toml",
        seeded.url,
        sections={
            "health_manager": {"octavia_compat": True, "heartbeat_key": KEY},
        },
    )
    daemon = start_daemon(cfg)
    agent, s = seeded.agent(), seeded.seed
    try:
        daemon.send(octavia_datagram(agent, 3, deltas=(100, 1000)))
        daemon.until(lambda: _status(seeded, "member", s.members[1]) == "ONLINE", what="ONLINE")
        assert _status(seeded, "load_balancer", s.load_balancer) == "ONLINE"
        daemon.until(
            lambda: seeded.scalar("SELECT COUNT(*) FROM amphora_health") == 1,
            what="amphora_health refreshed",
        )

        # v1 (pools nested in listeners) from the same amphora: a member goes DOWN.
        daemon.send(octavia_datagram(agent, 1, members={s.members[1]: MemberState.DOWN}))
        daemon.until(lambda: _status(seeded, "member", s.members[1]) == "ERROR", what="ERROR")
        daemon.until(lambda: _status(seeded, "pool", s.pool) == "DEGRADED", what="DEGRADED")

        # v3 again: its counters are deltas, added to what is there.
        daemon.send(octavia_datagram(agent, 3, deltas=(50, 500)))
        daemon.until(
            lambda: (
                seeded.rows("SELECT bytes_in, bytes_out FROM listener_statistics") == [(150, 1500)]
            ),
            what="v3 deltas summed",
        )
        assert daemon.metric("healthmgr_heartbeats_total", result="accepted") == 3
    finally:
        assert daemon.stop() == 0


# With octavia_compat off (the default) an Octavia heartbeat is rejected as bad_magic:
# test_daemon_status.py::test_bad_packets_are_counted_and_honest_traffic_still_served.

"""A member killed behind real HAProxy reaches the database at once: the whole chain, for real.

Real HAProxy, web servers, ``healthmgr serve`` (its default intervals: a 10 s
heartbeat interval, 0.25 s flushes) and ``amphora-agent`` (its defaults:
heartbeats every 10 s, HAProxy polled every second), on SQLite. About 6 s:
every part starts as a process and the members must be ONLINE first. The test
reports the time from the kill to ERROR in the database (``record_property``
and stdout); tests/bench/agent_latency.py measures its distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent.stack import Stack, when
from tests.conftest import fresh_database_url


@pytest.mark.haproxy
def test_killed_member_shows_error_in_the_database_before_the_next_heartbeat_is_due(
    haproxy_bin: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    url, drop = fresh_database_url("sqlite", tmp_path)
    stack = Stack(tmp_path, haproxy_bin, inter_ms=200, fall=2, agent_options=("-v",))
    try:
        stack.start(url)
        killed = stack.kill_member(1)
        arrived = when(lambda: stack.status(1) == "ERROR", 15, "member 2 ERROR in the database")
        down = stack.haproxy_changed(1, "DOWN", killed)
        assert stack.status(0) == "ONLINE"

        # It travelled in a heartbeat sent because something changed, not in
        # the periodic one (due only 10 s after the last).
        after_kill = [line for at, line in stack.agent_log.lines if at > killed]
        assert any("(changed)" in line for line in after_kill), stack.agent_log.text()
    finally:
        stack.close()
        drop()
    figures = {
        "kill_to_error_s": round(arrived - killed, 3),
        "haproxy_down_to_error_s": None if down is None else round(arrived - down, 3),
        "haproxy_detection_s": stack.detection_s,
        "target_s": stack.detection_s + 1.5,
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"bad news: {figures}")

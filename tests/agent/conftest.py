"""The agent tests' fixture: a real HAProxy (helpers in tests/agent/agent_testlib.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_testlib import LoadBalancer, start_haproxy_lb, stop_haproxy_lb


@pytest.fixture
def haproxy_lb(haproxy_bin: str, tmp_path: Path) -> Iterator[LoadBalancer]:
    """HAProxy serving one listener -> pool -> two members; both members UP at start."""
    lb = start_haproxy_lb(haproxy_bin, tmp_path)
    try:
        yield lb
    finally:
        stop_haproxy_lb(lb)

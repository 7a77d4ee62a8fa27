"""How long tests wait for what must come: sized for a loaded 2-core host.

The suite runs four workers on two cores beside other suites, so a daemon's start or a
verdict that takes a second when quiet can take ten. A wait that ends early is a pass at
once; these only bound how long a failing test takes. A bound the product promises is
asserted as a figure, never through one of these timeouts.
"""

import time
from collections.abc import Callable
from typing import Any

START_S = 60.0  # a daemon's start-up: importing it takes seconds, more under load
EVENTUALLY_S = 60.0  # a condition that must come (a write, a log line, a failover)


def wait_until(predicate: Callable[[], Any], timeout: float = EVENTUALLY_S, what: str = "") -> Any:
    """``predicate()``'s first true value, polled every 50 ms; AssertionError at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)

"""How long tests wait for what must come: sized for a loaded 2-core host.

The suite runs four workers on two cores beside other suites, so a daemon's start or a
verdict that takes a second when quiet can take ten. A wait that ends early is a pass at
once; these only bound how long a failing test takes. A bound the product promises is
asserted as a figure, never through one of these timeouts.
"""

START_S = 60.0  # a daemon's start-up: importing it takes seconds, more under load
EVENTUALLY_S = 60.0  # a condition that must come (a write, a log line, a failover)

"""The metric series ``healthmgr serve`` exposes: what dashboards and alert rules may query.

One list, read by the Grafana dashboard generator (scripts/grafana_dashboard.py),
by the tests of the dashboard and of the alert rules (every query names a series
listed here), and by the test that the daemon's registry exposes every one.
Names are metric families; :func:`sample_names` gives the names in the exposition
(``_total`` for counters; ``_bucket``, ``_sum``, ``_count`` for histograms).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["counter", "gauge", "histogram", "info"]

SERIES: dict[str, tuple[Kind, tuple[str, ...]]] = {
    # name: (type, labels)
    "healthmgr_datagrams_received": ("counter", ()),
    "healthmgr_heartbeats": ("counter", ("result",)),
    "healthmgr_processing_lag_seconds": ("histogram", ()),
    "healthmgr_commit_lag_seconds": ("histogram", ()),
    "healthmgr_flush_duration_seconds": ("histogram", ()),
    "healthmgr_flush_batch_size": ("histogram", ()),
    "healthmgr_flush_failures": ("counter", ()),
    "healthmgr_stale_amphorae": ("gauge", ()),
    "healthmgr_tracked_amphorae": ("gauge", ()),
    "healthmgr_circuit_breaker_open": ("gauge", ()),
    "healthmgr_failovers": ("counter", ("outcome",)),
    "healthmgr_topology_refreshes": ("counter", ()),
    "healthmgr_build": ("info", ("version", "manager_id")),
    # The manager's judgment under faults (issues 7 and 8).
    "healthmgr_impaired": ("gauge", ()),
    "healthmgr_impairments": ("counter", ("reason",)),
    "healthmgr_database_reachable": ("gauge", ()),
    "healthmgr_seconds_since_last_commit": ("gauge", ()),
    "healthmgr_kernel_drops": ("counter", ()),
    "healthmgr_failover_verdicts": ("counter", ("verdict", "reason")),
    "healthmgr_listener_count_mismatches": ("counter", ()),
    "healthmgr_rows_rejected": ("counter", ("table", "reason")),
    "healthmgr_octavia_agent_restarts": ("counter", ()),
    "healthmgr_silent_amphorae": ("gauge", ()),
    "healthmgr_peer_managers": ("gauge", ("state",)),
}

_SUFFIXES: dict[Kind, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


def sample_names() -> frozenset[str]:
    """Every sample name in the exposition of the series above."""
    return frozenset(
        name + suffix for name, (kind, _) in SERIES.items() for suffix in _SUFFIXES[kind]
    )

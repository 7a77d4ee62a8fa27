#!/usr/bin/env python3
"""Generate the Grafana dashboard of healthmgr (docs/grafana/healthmgr.json) with grafanalib.

    .venv/bin/python scripts/grafana_dashboard.py > docs/grafana/healthmgr.json

Needs the ``dashboards`` (or ``test``) extra. Every query names series of
healthmgr/manager/series.py; tests/test_observability.py checks that, and that the JSON in
docs/grafana/ is what this script prints. The ``instance`` label is the scrape
target's (one per manager); ``$datasource`` is chosen on import.
"""

from __future__ import annotations

import json
import sys

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

DATASOURCE = "${datasource}"
WIDTH, HEIGHT = 12, 8
UID = "healthmgr-overview"

# (title, unit, description, [(expr, legend)])
PANELS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        "Heartbeats by result",
        "ops",
        "Per second: accepted, or why not (bad_signature, replayed, unknown_amphora, ...).",
        [("sum by (result) (rate(healthmgr_heartbeats_total[$__rate_interval]))", "{{result}}")],
    ),
    (
        "Processing and commit lag (p50, p99)",
        "s",
        "Arrival to the in-memory view, and to the database commit that reflects it.",
        [
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(healthmgr_processing_lag_seconds_bucket[$__rate_interval])))",
                "processing p99",
            ),
            (
                "histogram_quantile(0.5, sum by (le) "
                "(rate(healthmgr_processing_lag_seconds_bucket[$__rate_interval])))",
                "processing p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(healthmgr_commit_lag_seconds_bucket[$__rate_interval])))",
                "commit p99",
            ),
        ],
    ),
    (
        "Flush duration (p99) and failures",
        "s",
        "One flush is one transaction; a failed flush keeps its rows and retries.",
        [
            (
                "histogram_quantile(0.99, sum by (le, instance) "
                "(rate(healthmgr_flush_duration_seconds_bucket[$__rate_interval])))",
                "p99 {{instance}}",
            ),
            (
                "sum by (instance) (rate(healthmgr_flush_failures_total[$__rate_interval]))",
                "failures/s {{instance}}",
            ),
            ("healthmgr_seconds_since_last_commit", "since last commit {{instance}}"),
        ],
    ),
    (
        "Flush size (rows per flush)",
        "short",
        "amphora_health refreshes, status changes and statistics updates per flush.",
        [
            (
                "sum by (instance) (rate(healthmgr_flush_batch_size_sum[$__rate_interval])) / "
                "sum by (instance) (rate(healthmgr_flush_batch_size_count[$__rate_interval]))",
                "{{instance}}",
            )
        ],
    ),
    (
        "Stale and silent amphorae",
        "short",
        "Failover candidates at the last health check, and amphorae that missed heartbeats.",
        [
            ("max(healthmgr_stale_amphorae)", "stale"),
            ("max(healthmgr_silent_amphorae)", "silent"),
            ("sum(healthmgr_tracked_amphorae)", "tracked"),
        ],
    ),
    (
        "Failovers by outcome",
        "short",
        "Per 5 minutes: requested, handed_off, succeeded, failed, retried, abandoned, ...",
        [("sum by (outcome) (increase(healthmgr_failovers_total[5m]))", "{{outcome}}")],
    ),
    (
        "Failover verdicts by reason",
        "short",
        "Per 5 minutes: failover, defer or stop, and why.",
        [
            (
                "sum by (verdict, reason) (increase(healthmgr_failover_verdicts_total[5m]))",
                "{{verdict}} {{reason}}",
            )
        ],
    ),
    (
        "Circuit breaker, impairment, database",
        "short",
        "1 = breaker open / manager impaired / database reachable, per manager.",
        [
            ("max by (instance) (healthmgr_circuit_breaker_open)", "breaker open {{instance}}"),
            ("max by (instance) (healthmgr_impaired)", "impaired {{instance}}"),
            ("min by (instance) (healthmgr_database_reachable)", "db reachable {{instance}}"),
            ("max by (state) (healthmgr_peer_managers)", "peer managers {{state}}"),
        ],
    ),
    (
        "Rejected rows",
        "short",
        "Values the database refused, quarantined and counted, per 5 minutes.",
        [
            (
                "sum by (table, reason) (increase(healthmgr_rows_rejected_total[5m]))",
                "{{table}} {{reason}}",
            )
        ],
    ),
    (
        "Kernel drops",
        "ops",
        "Datagrams the kernel dropped at the manager's socket (receive buffer full).",
        [
            (
                "sum by (instance) (rate(healthmgr_kernel_drops_total[$__rate_interval]))",
                "{{instance}}",
            )
        ],
    ),
]


def panel(index: int, title: str, unit: str, description: str, queries: list) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        unit=unit,
        targets=[
            Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + n), datasource=DATASOURCE)
            for n, (expr, legend) in enumerate(queries)
        ],
        gridPos=GridPos(h=HEIGHT, w=WIDTH, x=(index % 2) * WIDTH, y=(index // 2) * HEIGHT),
    )


def dashboard() -> Dashboard:
    return Dashboard(
        title="healthmgr",
        uid=UID,
        description="The health manager of load-balancer amphorae: heartbeats, the database "
        "writer, stale amphorae, failovers, the circuit breaker (docs/operations.md).",
        tags=["healthmgr"],
        timezone="utc",
        time=Time("now-6h", "now"),
        refresh="30s",
        templating=Templating(
            [
                Template(
                    name="datasource", label="Data source", query="prometheus", type="datasource"
                )
            ]
        ),
        panels=[panel(i, *spec) for i, spec in enumerate(PANELS)],
    ).auto_panel_ids()


def render() -> str:
    data = dashboard().to_json_data()
    return json.dumps(data, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""The observability kit: the Grafana dashboard and the Prometheus alert rules.

Every query names a series of healthmgr/manager/series.py, the list the daemon exposes;
the dashboard JSON in docs/grafana/ is what its generator prints; the rules pass
`promtool check rules` and their unit tests (`promtool test rules`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from healthmgr.manager.metrics import Metrics
from healthmgr.manager.series import SERIES, sample_names
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "healthmgr.json"
RULES = ROOT / "docs" / "prometheus" / "healthmgr-rules.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "healthmgr-rules.test.yml"
METRIC = re.compile(r"\b(healthmgr_[a-z_]+)\b")

# Series of the contract with issues 7 and 8 that the daemon does not expose yet.
# When the daemon gains one, test_the_daemon_exposes_every_listed_series fails until
# it is taken off this set; the set is empty once that work is merged.
NOT_YET_EXPOSED: frozenset[str] = frozenset()


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
    return str(path)


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def unknown_metrics(exprs: list[str]) -> set[str]:
    return {name for e in exprs for name in METRIC.findall(e)} - sample_names()


def test_the_daemon_exposes_every_listed_series() -> None:
    families = {metric.name for metric in Metrics(process=False).registry.collect()}
    ours = {name for name in families if name.startswith("healthmgr_")}
    assert ours - set(SERIES) == set(), "exposed but not listed in healthmgr/manager/series.py"
    assert set(SERIES) - ours == NOT_YET_EXPOSED


def test_every_dashboard_query_names_an_exposed_series() -> None:
    exprs = dashboard_exprs()
    assert exprs and unknown_metrics(exprs) == set()
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for topic in (
        "heartbeats by result",
        "lag",
        "flush duration",
        "flush size",
        "stale",
        "failovers by outcome",
        "reason",
        "breaker",
        "rejected rows",
        "kernel drops",
    ):
        assert topic in titles, f"no panel on {topic}"  # fmt: skip


def test_a_query_naming_an_unknown_series_is_caught() -> None:
    assert unknown_metrics(["rate(healthmgr_heartbeat_total[5m])"]) == {"healthmgr_heartbeat_total"}


def test_the_dashboard_json_is_what_the_generator_prints() -> None:
    pytest.importorskip("grafanalib", reason="the test extra installs grafanalib")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grafana_dashboard.py")],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    assert done.stdout == DASHBOARD.read_text(), (
        "docs/grafana/healthmgr.json is stale: "
        ".venv/bin/python scripts/grafana_dashboard.py > docs/grafana/healthmgr.json"
    )


def test_every_rule_names_an_exposed_series() -> None:
    exprs = rule_exprs()
    assert unknown_metrics(exprs) == set()
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert alerts == {
        "HealthmgrCircuitBreakerOpen",
        "HealthmgrFlushesFailing",
        "HealthmgrManagerImpaired",
        "HealthmgrFailoversFailing",
        "HealthmgrNoHeartbeats",
        "HealthmgrRowsRejected",
    }


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    tests = subprocess.run([tool, "test", "rules", RULE_TESTS.name], capture_output=True,
                           text=True, timeout=60, check=False, cwd=RULE_TESTS.parent)  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_flush_batch_size_is_documented_as_rows() -> None:
    """It counts rows (health refreshes, status changes, statistics updates), not amphorae."""
    (family,) = [m for m in Metrics(process=False).registry.collect()
                 if m.name == "healthmgr_flush_batch_size"]  # fmt: skip
    assert family.documentation.startswith("Rows written by one flush")
    assert "Amphorae" not in family.documentation

"""healthmgr-chaos end to end: every scenario against real managers, with a verdict.

Each test runs the real ``healthmgr-chaos`` command as a subprocess, once per
deployment, with several short scenarios in one invocation. Two kinds of
deployment:

- managers the tool starts itself (SQLite by default; PostgreSQL and MariaDB
  with ``--db-url``, several managers, each behind a TCP relay of its own);
- managers a test started (tests/manager/harness.py), given to the tool as an
  operator would: ``--config``, ``--manager``, ``--metrics``, ``--pid`` and
  the control sockets of the relays in front of their databases.

The default suite runs every scenario once, short (a fleet of 10 to 40, faults
of about one failover bound) at fast timings (FAST: a scenario takes 3 to 6 s):
the single-manager ones and those with real HAProxy and agents on SQLite, the
several-managers ones on MariaDB, a database outage and a manager SIGKILLed
for good against two external managers on PostgreSQL. With ``--run-slow``:
the long versions (``--long``: ten times the fleet, longer faults, the tool's
default timings) on all three databases, and every scenario against external
managers on each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from healthmgr.chaos.relay import RelayProcess
from healthmgr.db.migrate import upgrade
from tests.cli.clitest import cli
from tests.fault.conftest import server_address, through
from tests.manager.harness import RunningDaemon, start_daemon, write_config

ROOT = Path(__file__).resolve().parents[2]
# In an order that spares waits: a scenario after one that restarted or cut off a
# manager waits for its start-up grace first.
SINGLE = ["lossy", "replay-forgery", "flood", "poison", "mass-outage-sudden", "mass-outage-gradual"]
REAL = ["agents-lossy", "partition"]  # real HAProxy and amphora-agents; partition: root
SEVERAL = ["several-managers", "flapping", "manager-cut-off"]
EVERY = [*SINGLE, *REAL, *SEVERAL, "db-outage", "manager-sigterm", "manager-sigkill"]
# The default suite's timings: a heartbeat timeout of 6 intervals, as production's
# (10 s, 60 s); every scenario lasts a few timeouts, so these set the suite's cost.
FAST = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 1.2,
    "health_check_interval": 0.1,
    "flush_interval": 0.05,
    "sock_rlimit": 4 << 20,
}
FAST_ARGS = [
    "--heartbeat-interval",
    "0.2",
    "--heartbeat-timeout",
    "1.2",
    "--health-check-interval",
    "0.1",
]
# A manager SIGKILLed and not restarted holds the amphorae it observed last for
# observer_timeout (docs/operations.md): short here, so the verdict needs no 300 s.
OBSERVER_TIMEOUT = 3.0


def chaos(tmp_path: Path, *args: str, timeout: float = 900) -> tuple[int, list[dict], dict]:
    """Run healthmgr-chaos; its exit status, its verdict rows and its JSON figures."""
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "healthmgr.chaos.cli",
            "run",
            *args,
            "-f",
            "json",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert done.stdout, done.stderr
    rows = json.loads(done.stdout)
    return done.returncode, rows, json.loads(figures.read_text()) if figures.exists() else {}


def assert_passed(code: int, rows: list[dict], scenarios: list[str]) -> None:
    failed = [r for r in rows if r["result"] != "pass"]
    assert not failed, json.dumps(failed, indent=1)
    assert code == 0
    assert sorted({r["scenario"] for r in rows}) == sorted(scenarios)
    for scenario in scenarios:
        invariants = {r["invariant"] for r in rows if r["scenario"] == scenario}
        assert {
            "0 false failovers",
            "statistics exact",
            "statuses = newest report",
            "no row refused without a metric",
            "bounded daemon memory",
        } <= invariants


def checks(figures: dict, scenario: str) -> dict[str, dict]:
    return {c["invariant"]: c for c in figures[scenario]["checks"]}


def root() -> bool:
    return os.geteuid() == 0


# -- managers the tool starts ---------------------------------------------------------------


@pytest.mark.haproxy
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_single_manager_and_real_parts_on_sqlite(
    db_url: str, tmp_path: Path, haproxy_bin: str
) -> None:
    """Every single-manager scenario, and those with real HAProxy and amphora-agents
    (the partition needs root: network namespaces), in one invocation."""
    scenarios = SINGLE + (REAL if root() else ["agents-lossy"]) + ["manager-sigterm"]
    code, rows, figures = chaos(
        tmp_path, *scenarios, *FAST_ARGS, "--work-dir", str(tmp_path / "work")
    )
    assert_passed(code, rows, scenarios)
    lossy = figures["lossy"]
    assert lossy["figures"]["relay"]["lost"] > 0 and lossy["figures"]["relay"]["duplicated"] > 0
    assert lossy["timeline"]["samples"] and lossy["timeline"]["events"]
    assert figures["poison"]["figures"]["refused_rows"] > 0
    agents = figures["agents-lossy"]
    assert agents["figures"]["relay"]["corrupted"] > 0  # rejected by reason: a check above
    assert {
        "statuses follow HAProxy",
        "statistics = HAProxy's counters",
        "dead real amphora failed over once, in time",
    } <= set(checks(figures, "agents-lossy"))
    if not root():
        pytest.skip("partition: network namespaces need root (the rest passed)")
    part = figures["partition"]["figures"]
    # The old amphora beats again: its request stays PENDING for the API's worker, busy
    # stays set, no second request (docs/fault-injection.md, "Partition").
    assert part["before_heal"] == part["after_heal"] == [["PENDING"], True, "ALLOCATED"]


@pytest.mark.mysql
def test_several_manager_scenarios_on_mariadb(mysql_url: str, tmp_path: Path) -> None:
    png = tmp_path / "timeline.png"
    code, rows, figures = chaos(
        tmp_path, *SEVERAL, *FAST_ARGS, "--managers", "2", "--db-url", mysql_url, "--plot", str(png)
    )
    assert_passed(code, rows, SEVERAL)
    assert png.read_bytes().startswith(b"\x89PNG")
    by_manager = figures["several-managers"]["figures"]["requests_by_manager"]
    assert sum(by_manager.values()) == figures["several-managers"]["figures"]["dead"]


def test_a_scenario_that_cannot_run_here_is_a_usage_error() -> None:
    """In this process (the real process runs in the tests above)."""
    from healthmgr.chaos.cli import ChaosApp

    done = cli("run", "flapping", app=ChaosApp)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "healthmgr-chaos: error: scenario flapping cannot run here: needs 2 managers (has 1)"
    )
    unknown = cli("run", "nope", app=ChaosApp)
    assert unknown.returncode == 2 and "unknown scenario 'nope'" in unknown.stderr


# -- an existing deployment ------------------------------------------------------------------


class External:
    """Managers started here, each reaching the database through a relay process."""

    def __init__(
        self,
        stack: ExitStack,
        tmp_path: Path,
        db_url: str,
        managers: int,
        timings: dict[str, float] | None = None,
    ) -> None:
        upgrade(db_url)
        self.daemons: list[RunningDaemon] = []
        self.relays: list[RelayProcess] = []
        self.configs: list[Path] = []
        server = not db_url.startswith("sqlite")
        for i in range(managers):
            url = db_url
            if server:
                relay = stack.enter_context(RelayProcess(server_address(db_url)))
                self.relays.append(relay)
                url = through(db_url, relay.address)
            cfg = write_config(
                tmp_path / f"hm-{i}.toml",
                url,
                sections={
                    "health_manager": {
                        **FAST,
                        "manager_id": f"ext-{i}",
                        "observer_timeout": OBSERVER_TIMEOUT,
                        **(timings or {}),
                    },
                    "database": {"timeout": 1.0},
                },
            )
            self.configs.append(cfg)
            self.daemons.append(start_daemon(cfg, wait=False))  # all at once: a second each
            stack.callback(lambda i=i: self.daemons[i].stop())
        for i, cfg in enumerate(self.configs):
            try:
                self.daemons[i].wait_serving()
            except AssertionError:  # its free port taken meanwhile: start_daemon retries
                self.daemons[i].stop(signal.SIGKILL)
                self.daemons[i] = start_daemon(cfg)

    def args(self, db_url: str) -> list[str]:
        out = ["--config", str(self.configs[0]), "--db-url", db_url]
        for d, relay in zip(self.daemons, self.relays or [None] * len(self.daemons), strict=True):
            host, port = d.address
            out += [
                "--manager",
                f"{host}:{port}",
                "--metrics",
                f"http://{d.config['metrics']['bind']}/metrics",
                "--pid",
                str(d.proc.pid),
            ]
            if relay is not None:
                assert relay.control is not None
                out += ["--db-relay", relay.control.path]
        return out


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


@pytest.mark.postgresql
def test_external_managers_on_postgresql(pg_url: str, tmp_path: Path, stack: ExitStack) -> None:
    """Two managers started by someone else: the relays in front of their databases are
    blackholed through their control sockets; then the first is SIGKILLed by its pid
    and not restarted (the tool cannot restart what it did not start).

    The survivor now hears each amphora every other interval: that must not open the
    breaker (suspect_after grows with the managers lost, healthmgr/rules/detector.py). Of
    the two amphorae that died, one was last observed by the killed manager: it is
    held until it has been silent observer_timeout (3 s here), then failed over; the
    other within the failover bound."""
    ext = External(stack, tmp_path, pg_url, 2)
    scenarios = ["db-outage", "manager-sigkill"]
    code, rows, figures = chaos(tmp_path, *scenarios, *ext.args(pg_url))
    assert_passed(code, rows, scenarios)
    killed, survivor = ext.daemons
    assert killed.proc.wait(5) == -9 and survivor.proc.poll() is None
    sigkill = figures["manager-sigkill"]
    assert sigkill["figures"]["dead_observed_by"] == ["ext-0", "ext-1"]
    assert checks(figures, "manager-sigkill")["dead failed over exactly once, in time"][
        "figure"
    ].startswith("2/2 once")
    assert sigkill["figures"]["dead_reasons"] == ["heartbeat_timeout", "observer_presumed_dead"]
    killed_at = next(t for t, e in sigkill["timeline"]["events"] if e.startswith("SIGKILL"))
    opened = [
        s["t"] for s in sigkill["timeline"]["samples"] if s["breaker_open"] and s["t"] >= killed_at
    ]
    assert not opened, (
        sigkill["timeline"]["events"],
        opened,
        [line for line in survivor.lines if "breaker" in line],
    )


# -- the long versions, and every scenario against external managers ---------------------


@pytest.mark.slow
@pytest.mark.haproxy
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_long_scenarios_on_sqlite(db_url: str, tmp_path: Path, haproxy_bin: str) -> None:
    scenarios = (
        SINGLE
        + (REAL if root() else ["agents-lossy"])
        + ["db-outage", "manager-sigterm", "manager-sigkill"]
    )
    code, rows, _ = chaos(tmp_path, *scenarios, "--long", timeout=3600)
    assert_passed(code, rows, scenarios)


@pytest.mark.slow
@pytest.mark.haproxy
def test_long_scenarios_on_the_servers(
    server_db_url: str, tmp_path: Path, haproxy_bin: str
) -> None:
    scenarios = [s for s in EVERY if root() or s != "partition"]
    code, rows, _ = chaos(
        tmp_path, *scenarios, "--long", "--managers", "3", "--db-url", server_db_url, timeout=3600
    )
    assert_passed(code, rows, scenarios)


@pytest.mark.slow
@pytest.mark.haproxy
def test_every_scenario_against_external_managers(
    db_url: str, tmp_path: Path, stack: ExitStack, haproxy_bin: str
) -> None:
    """The short versions: one manager on SQLite (what it can run), two on the servers,
    manager-sigkill last (the killed manager stays dead), and manager-sigterm against a
    fresh pair."""
    server = not db_url.startswith("sqlite")
    signals = ("manager-sigterm", "manager-sigkill")
    ext = External(stack, tmp_path, db_url, 2 if server else 1)
    scenarios = [
        s
        for s in EVERY
        if (root() or s != "partition") and s not in signals and (server or s not in SEVERAL)
    ] + (["manager-sigkill"] if server else [])
    code, rows, _ = chaos(tmp_path, *scenarios, *ext.args(db_url), timeout=3600)
    assert_passed(code, rows, scenarios)
    if server:
        (tmp_path / "again").mkdir()
        again = External(stack, tmp_path / "again", db_url, 2)
        code, rows, _ = chaos(tmp_path, "manager-sigterm", *again.args(db_url))
        assert_passed(code, rows, ["manager-sigterm"])

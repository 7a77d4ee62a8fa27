"""``healthmgr-chaos``: run fault-injection scenarios against managers, with a verdict.

A second cliff application, built like ``healthmgr`` (the same output options
``-f table|json|yaml|value|csv``, ``-c COLUMN``, one-line errors):

    healthmgr-chaos scenario list
    healthmgr-chaos run SCENARIO... | --all      [against managers it starts]
        [--managers N] [--db-url URL] [--work-dir DIR]
    healthmgr-chaos run SCENARIO... --config healthmgr.toml --manager HOST:PORT ...
        [--metrics URL ...] [--pid PID ...] [--db-relay CONTROL_SOCKET ...] [--db-url URL]
    [--amphorae N] [--long] [--json FILE] [--plot FILE.png]

Exit status: 0 every invariant held, 1 one failed (or a scenario could not
finish), 2 a bad argument (an unknown scenario, one that cannot run against
this deployment), 3 an invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cliff.commandmanager import CommandManager

from healthmgr.cli.base import Lister
from healthmgr.cli.errors import CliError, Exit, UsageError
from healthmgr.cli.main import Commands, HealthmgrApp

COMMANDS = {"scenario list": "cli:ScenarioList", "run": "cli:Run"}
COLUMNS = ("scenario", "invariant", "result", "figure", "bound", "detail")


class ChaosApp(HealthmgrApp):
    NAME = "healthmgr-chaos"
    DESCRIPTION = (
        "healthmgr-chaos: fault-injection scenarios against healthmgr managers and their "
        "database, each with a verdict: pass or fail per invariant, with the figures. "
        "`healthmgr-chaos scenario list` names them; `healthmgr-chaos help run` tells how "
        "to point it at a deployment (docs/fault-injection.md)."
    )

    @classmethod
    def commands(cls) -> CommandManager:
        return Commands(COMMANDS, "healthmgr.chaos")


class ScenarioList(Lister):
    """List the scenarios, what each needs, and what it does."""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        from healthmgr.chaos.scenarios import SCENARIOS

        rows = []
        for spec in SCENARIOS.values():
            needs = [f"{spec.managers} managers"] if spec.managers > 1 else []
            needs += ["server database"] if spec.server_db else []
            needs += ["database relay"] if spec.db_relay else []
            needs += ["process ids"] if spec.signals else []
            needs += ["root"] if spec.root else []
            needs += ["haproxy"] if spec.haproxy else []
            rows.append((spec.name, ", ".join(needs) or "-", spec.summary))
        return ("name", "needs", "summary"), rows


def _address(text: str) -> tuple[str, int]:
    from healthmgr.wire.addresses import split_host_port

    try:
        return split_host_port(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Run(Lister):
    """Run scenarios and print the verdict: one row per invariant; exit 1 if one failed."""

    exit_code = Exit.OK

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        p = super().get_parser(prog_name)
        p.add_argument(
            "scenarios",
            nargs="*",
            metavar="SCENARIO",
            help="scenarios to run, in order (see `scenario list`)",
        )
        p.add_argument(
            "--all", action="store_true", help="every scenario that can run against this deployment"
        )
        own = p.add_argument_group("managers started by the tool (the default)")
        own.add_argument(
            "--managers",
            type=int,
            default=1,
            metavar="N",
            help="how many to start (several need --db-url of a server)",
        )
        own.add_argument(
            "--work-dir",
            type=Path,
            metavar="DIR",
            help="configs, logs and the SQLite database (default: a temporary "
            "directory, removed afterwards)",
        )
        # A timeout of six intervals, as production's defaults (10 s, 60 s): with fewer,
        # a lost heartbeat or a lost manager crosses the breaker's line (docs).
        own.add_argument("--heartbeat-interval", type=float, default=0.5, metavar="S")
        own.add_argument("--heartbeat-timeout", type=float, default=3.0, metavar="S")
        own.add_argument("--health-check-interval", type=float, default=0.2, metavar="S")
        ext = p.add_argument_group("an existing deployment (--manager given)")
        ext.add_argument(
            "--manager",
            type=_address,
            action="append",
            default=[],
            metavar="HOST:PORT",
            help="a manager's heartbeat address (repeat)",
        )
        ext.add_argument(
            "--config",
            metavar="PATH",
            help="the managers' healthmgr configuration: keys, timings, database",
        )
        ext.add_argument(
            "--metrics",
            action="append",
            default=[],
            metavar="URL",
            help="the --manager's metrics URL, in the same order (repeat)",
        )
        ext.add_argument(
            "--pid",
            type=int,
            action="append",
            default=[],
            metavar="PID",
            help="the --manager's process id, in the same order (repeat)",
        )
        ext.add_argument(
            "--db-relay",
            action="append",
            default=[],
            metavar="SOCKET",
            help="control socket of the relay (python -m healthmgr.chaos.relay) "
            "in front of the --manager's database connection (repeat)",
        )
        p.add_argument(
            "--db-url",
            metavar="URL",
            help="the database (default: SQLite in --work-dir, or the --config's)",
        )
        p.add_argument("--amphorae", type=int, metavar="N", help="fleet size of every scenario")
        p.add_argument("--long", action="store_true", help="the long versions")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--margin",
            type=float,
            default=0.25,
            metavar="S",
            help="added to the failover bound (the check's own time, clocks)",
        )
        p.add_argument("--max-rss-growth", type=float, default=64.0, metavar="MIB")
        p.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
        p.add_argument(
            "--plot",
            type=Path,
            metavar="FILE",
            help="draw the timelines as a PNG (needs healthmgr[chaos])",
        )
        return p

    def run(self, parsed_args: argparse.Namespace) -> int:
        return super().run(parsed_args) or int(self.exit_code)

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        from healthmgr.chaos.deployment import DeploymentError
        from healthmgr.chaos.run import Params, ScenarioError
        from healthmgr.chaos.scenarios import SCENARIOS, Spec, run_scenario

        a = parsed_args
        unknown = [s for s in a.scenarios if s not in SCENARIOS]
        if unknown:
            raise UsageError(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
        if not a.scenarios and not a.all:
            raise UsageError("name the scenarios to run, or --all")
        if a.plot is not None:
            _check_matplotlib()
        params = Params(a.amphorae, a.long, a.seed, a.margin, a.max_rss_growth)
        if not (a.manager or a.config or a.all):  # refused before anything is started
            from healthmgr.chaos.deployment import planned_deployment

            planned = planned_deployment(max(1, a.managers), a.db_url)
            for name in a.scenarios:
                why = SCENARIOS[name].unmet(planned)
                if why is not None:
                    raise UsageError(f"scenario {name} cannot run here: {why}")
        work = a.work_dir or Path(tempfile.mkdtemp(prefix="healthmgr-chaos-"))
        try:
            deployment = self._deployment(a, work)
        except DeploymentError as e:
            self._cleanup_work(a, work)
            raise CliError(str(e), Exit.FAILED) from None
        rows: list[tuple[Any, ...]] = []
        results = []
        try:
            chosen: list[Spec] = [SCENARIOS[s] for s in a.scenarios] or list(SCENARIOS.values())
            runnable = []
            for spec in chosen:
                why = spec.unmet(deployment)
                if why is None:
                    runnable.append(spec)
                elif a.all:
                    rows.append((spec.name, "-", "skipped", "-", "-", why))
                else:
                    raise UsageError(f"scenario {spec.name} cannot run here: {why}")
            from healthmgr.chaos.run import wait_ready

            for spec in runnable:
                self.say(f"{spec.name}: {spec.summary}")
                try:
                    wait_ready(deployment, 4 * deployment.timing.heartbeat_timeout + 20)
                    result = run_scenario(spec, deployment, params)
                except (ScenarioError, DeploymentError) as e:
                    rows.append((spec.name, "scenario finished", "FAIL", "-", "-", str(e)))
                    self.exit_code = Exit.FAILED
                    continue
                except Exception as e:  # a bug here must not hide the other verdicts
                    if getattr(self.app.options, "debug", False):
                        raise
                    rows.append(
                        (
                            spec.name,
                            "scenario finished",
                            "FAIL",
                            "-",
                            "-",
                            f"{type(e).__name__}: {e}",
                        )
                    )
                    self.exit_code = Exit.FAILED
                    continue
                results.append(result)
                for c in result.checks:
                    rows.append((spec.name, c.invariant, c.result, c.figure, c.bound, c.detail))
                if not result.passed:
                    self.exit_code = Exit.FAILED
        finally:
            deployment.close()
            self._cleanup_work(a, work)
        self._write(a, results)
        return COLUMNS, rows

    def _deployment(self, a: argparse.Namespace, work: Path) -> Any:
        from healthmgr.chaos.deployment import external_deployment, start_deployment

        if a.manager or a.config:
            if not a.config:
                raise UsageError("--manager needs --config (the keys and timings)")
            return external_deployment(
                a.config,
                a.manager,
                db_url=a.db_url,
                metrics=a.metrics,
                pids=a.pid,
                db_relays=a.db_relay,
            )
        if a.managers < 1:
            raise UsageError("--managers must be 1 or more")
        options = {
            "heartbeat_interval": a.heartbeat_interval,
            "heartbeat_timeout": a.heartbeat_timeout,
            "health_check_interval": a.health_check_interval,
        }
        self.say(f"starting {a.managers} manager(s) in {work}")
        return start_deployment(work, managers=a.managers, db_url=a.db_url, options=options)

    def _cleanup_work(self, a: argparse.Namespace, work: Path) -> None:
        if a.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    def _write(self, a: argparse.Namespace, results: Sequence[Any]) -> None:
        if a.json is not None:
            doc = {
                r.scenario: {
                    "passed": r.passed,
                    "figures": r.figures,
                    "checks": [
                        dict(
                            zip(
                                COLUMNS[1:],
                                (c.invariant, c.result, c.figure, c.bound, c.detail),
                                strict=True,
                            )
                        )
                        for c in r.checks
                    ],
                    "timeline": r.timeline.to_json(),
                }
                for r in results
            }
            a.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        if a.plot is not None and results:
            from healthmgr.chaos.timeline import plot

            plot([r.timeline for r in results], a.plot)


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'healthmgr[chaos]'") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return ChaosApp().run(args)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())

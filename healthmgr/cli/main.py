"""``healthmgr``: one cliff application, every command in :data:`COMMANDS`.

Commands are cliff commands (see healthmgr/cli/base.py), so every one that
prints data has OpenStack's output options: ``-f table|json|yaml|value|csv|shell``,
``-c COLUMN``, ``--sort-column``, ``--noindent``, ``--max-width``. Exit statuses
are those of :class:`healthmgr.cli.errors.Exit` (docs/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TextIO

from cliff.app import App
from cliff.commandmanager import CommandManager

from healthmgr import __version__
from healthmgr.cli.errors import Exit, UsageError

__all__ = ["COMMANDS", "HealthmgrApp", "UsageError", "main"]

DESCRIPTION = (
    "healthmgr: the health manager of load-balancer amphorae. `healthmgr serve` runs the "
    "daemon; the other commands show the load balancers, amphorae, failovers and statistics "
    "in the database it shares with the API, act on amphorae and failover requests, and "
    "manage heartbeat keys, the configuration and the database schema. "
    "`healthmgr help COMMAND` describes a command."
)

# command name -> "module:Class" under healthmgr.cli (imported when the command runs)
COMMANDS: dict[str, str] = {
    "serve": "serve:Serve",
    "config check": "config:Check",
    "config show": "config:Show",
    "config import-octavia": "config:ImportOctavia",
    "db upgrade": "db:Upgrade",
    "db current": "db:Current",
    "db stamp": "db:Stamp",
    "db ddl": "db:Ddl",
    "keys derive": "keys:Derive",
    "keys generate": "keys:Generate",
    "status show": "status:StatusShow",
    "loadbalancer list": "objects:LoadBalancerList",
    "loadbalancer show": "objects:LoadBalancerShow",
    "listener list": "objects:ListenerList",
    "listener show": "objects:ListenerShow",
    "pool list": "objects:PoolList",
    "pool show": "objects:PoolShow",
    "member list": "objects:MemberList",
    "member show": "objects:MemberShow",
    "amphora list": "amphora:AmphoraList",
    "amphora show": "amphora:AmphoraShow",
    "amphora failover": "amphora:AmphoraFailover",
    "amphora release": "amphora:AmphoraRelease",
    "amphora resume": "amphora:AmphoraResume",
    "failover list": "failover:FailoverList",
    "failover show": "failover:FailoverShow",
    "failover retry": "failover:FailoverRetry",
    "stats show": "stats:StatsShow",
    "health": "health:Health",
}


class _LazyCommand:
    """A command class imported only when cliff asks for it (keeps start-up fast)."""

    def __init__(self, target: str, package: str = "healthmgr.cli") -> None:
        self.target = target
        self.package = package

    def load(self) -> type:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(f"{self.package}.{module}"), name)

    @property
    def value(self) -> str:
        return f"{self.package}.{self.target}"


class Commands(CommandManager):
    """A command table, and no entry-point scan: the table is the whole CLI."""

    def __init__(self, commands: dict[str, str] = COMMANDS, package: str = "healthmgr.cli"):
        super().__init__(None)
        for name, target in commands.items():
            self.commands[name] = _LazyCommand(target, package)  # type: ignore[assignment]


class HealthmgrApp(App):
    NAME = "healthmgr"
    DESCRIPTION = DESCRIPTION

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        super().__init__(
            description=self.DESCRIPTION,
            version=__version__,
            command_manager=self.commands(),
            stdout=stdout,
            stderr=stderr,
            deferred_help=True,
        )

    @classmethod
    def commands(cls) -> CommandManager:
        return Commands()

    def build_option_parser(self, description, version, argparse_kwargs=None):  # type: ignore[no-untyped-def]
        parser = super().build_option_parser(description, version, argparse_kwargs)
        parser.prog = self.NAME
        for action in parser._actions:
            if isinstance(action, argparse._VersionAction):
                action.version = f"{self.NAME} {version}"
        return parser

    def configure_logging(self) -> None:
        # `serve` configures its own logging; the other commands log only with -v/--log-file.
        if self.options.verbose_level > 1 or self.options.log_file:
            super().configure_logging()

    def run_subcommand(self, argv: list[str]) -> int:
        try:
            self.command_manager.find_command(argv)
        except ValueError:
            # cliff says this on stdout; an error belongs on stderr, with the usage status.
            self.stderr.write(
                f"{self.NAME}: error: {' '.join(argv)!r} is not a {self.NAME} command; "
                f"see `{self.NAME} --help`\n"
            )
            matches = [m for m in self.get_fuzzy_matches(argv[0]) if m not in ("complete",)]
            if matches:
                self.stderr.write(f"did you mean: {', '.join(matches)}?\n")
            return int(Exit.USAGE)
        return super().run_subcommand(argv)

    def run(self, argv: list[str]) -> int:
        if not argv:
            self.parser.print_usage(self.stderr)
            self.stderr.write(f"{self.NAME}: error: no command given; see `{self.NAME} --help`\n")
            return int(Exit.USAGE)
        return super().run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return HealthmgrApp().run(args)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())

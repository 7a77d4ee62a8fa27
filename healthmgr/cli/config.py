"""`healthmgr config check|show`: validate a configuration, print the effective one.

Both apply the ``HEALTHMGR_<SECTION>__<OPTION>`` environment overrides, as the
daemon would, so what they report is what ``healthmgr serve`` would run with.
"""

from __future__ import annotations

import argparse

from healthmgr.cli.base import Context, ListColumn, ShowOne, add_config_option
from healthmgr.cli.errors import Exit, Reported
from healthmgr.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Settings,
    redacted,
    resolve_config_path,
)


class Check(ShowOne):
    """Validate the configuration: every problem on its own line on stderr, exit 3 if any.

    With --connect, also reach the database and check that its schema is at this
    release's head (exit 4 or 5 otherwise): a check for systemd's ExecStartPre.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_config_option(parser)
        parser.add_argument(
            "--connect",
            action="store_true",
            help="also reach the database and check its schema revision",
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            try:
                settings = ctx.settings
            except ConfigError as exc:
                for problem in exc.problems:
                    self.app.stderr.write(problem + "\n")
                raise Reported(Exit.CONFIG) from None
            fields = ["config", "result", "warnings"]
            values: list[object] = [_source(settings, parsed_args.config), "OK"]
            warnings = config_warnings(settings)
            for warning in warnings:
                self.app.stderr.write(f"warning: {warning}\n")
            values.append(ListColumn(warnings))
            if parsed_args.connect:
                from healthmgr.db.engine import describe
                from healthmgr.db.migrate import check_current

                revision = check_current(ctx.engine(check_schema=False))
                fields.append("database")
                values.append(f"{describe(ctx.url())}: schema at {revision} (head)")
        return tuple(fields), tuple(values)


def _source(settings: Settings, given: str | None) -> str:
    if settings.source:
        return settings.source
    path, _ = resolve_config_path(given)
    return f"defaults (no file at {path or DEFAULT_CONFIG_PATH})"


def config_warnings(settings: Settings) -> list[str]:
    """What is valid but probably not meant, naming the option that is missing."""
    hm = settings.health_manager
    out = []
    if not settings.keys.master:
        if hm.heartbeat_key and not hm.octavia_compat:
            out.append(
                "no [[keys.master]], and heartbeat_key is set but octavia_compat is false: "
                "every heartbeat will be rejected (set health_manager.octavia_compat = true "
                "to accept Octavia's envelope, or add a [[keys.master]])"
            )
        elif not (hm.octavia_compat and hm.heartbeat_key):
            out.append(
                "no [[keys.master]] and no Octavia heartbeat_key: every heartbeat will be rejected"
            )
    if hm.octavia_compat and not hm.heartbeat_key:
        out.append("octavia_compat = true needs heartbeat_key (or heartbeat_key_file)")
    return out


class Show(ShowOne):
    """Print the effective configuration (file and environment), secrets redacted.

    The TOML output is itself a valid configuration (secrets kept in files stay
    file references; inline secrets read <redacted>). -c SECTION shows one section.
    """

    @property
    def formatter_namespace(self) -> str:
        return "healthmgr.formatter.config"

    @property
    def formatter_default(self) -> str:
        return "toml"

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_config_option(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            settings = ctx.settings
        data = redacted(settings)
        if parsed_args.formatter == "toml":
            origin = settings.source or "defaults"
            self.app.stdout.write(f"# effective configuration: {origin} + environment\n")
        return tuple(data), tuple(data.values())

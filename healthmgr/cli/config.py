"""`healthmgr config check|show`: validate a configuration, print the effective one.

Both apply the ``HEALTHMGR_<SECTION>__<OPTION>`` environment overrides, as the
daemon would, so what they report is what ``healthmgr serve`` would run with.
"""

from __future__ import annotations

import argparse

from healthmgr.cli.base import Command, Context, ListColumn, ShowOne, add_config_option
from healthmgr.cli.errors import CliError, Exit, Reported, UsageError
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
                from healthmgr.db.migrate import check_current, detect

                engine = ctx.engine(check_schema=False)
                found = detect(engine)
                schema = ctx.schema()
                revision = check_current(engine, schema)
                fields += ["database", "schema"]
                values.append(f"{describe(ctx.url())}: schema at {revision} (head)")
                values.append(_schema_line(settings.database.schema, schema, found))
        return tuple(fields), tuple(values)


def _schema_line(configured: str, schema: str, found: object) -> str:
    """What ``config check --connect`` says of the schema: the one found, the mode used."""
    how = "detected" if configured == "auto" else "configured"
    described = found.describe()  # type: ignore[attr-defined]
    if schema == "octavia":
        return (
            f"octavia ({how}): found {described}; healthmgr writes its own tables "
            "and what Octavia's health manager writes"
        )
    return f"healthmgr ({how}): found {described}"


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
    bind = _bind_not_listed(hm.bind_ip, hm.bind_port, hm.controllers)
    if bind:
        out.append(bind)
    return out


def _bind_not_listed(ip: str, port: int, controllers: list[tuple[str, int]]) -> str | None:
    """The amphorae send to controller_ip_port_list only: is this manager's address in it?"""
    if not controllers:
        return None
    wildcard = ip in ("0.0.0.0", "::")
    if any(p == port and (wildcard or h == ip) for h, p in controllers):
        return None
    listed = ", ".join(f"{h}:{p}" for h, p in controllers)
    return (
        f"bind {ip}:{port} is not in controller_ip_port_list ({listed}): amphorae send "
        "heartbeats only to the listed addresses, none of them to this manager"
    )


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


class ImportOctavia(Command):
    """Write the healthmgr.toml equivalent to an octavia.conf (read with oslo.config).

    [health_manager] options, [database] connection (schema = "octavia"),
    heartbeat_key (octavia_compat = true), [DEFAULT] transport_url and
    control_exchange (failover driver "octavia"). Every option of the file that
    is not carried over is named on stderr, with why. Needs healthmgr[octavia].
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "octavia_conf",
            metavar="OCTAVIA_CONF",
            help="Octavia's configuration, e.g. /etc/octavia/octavia.conf",
        )
        parser.add_argument(
            "--output",
            "-o",
            metavar="PATH",
            help="write the TOML here (default: standard output); "
            "an existing file is not overwritten",
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from pathlib import Path

        from healthmgr.cli.formats import to_toml

        try:
            from healthmgr.octavia import conf_import
        except ImportError:  # pragma: no cover - the extra is missing
            raise CliError(
                'config import-octavia needs oslo.config: pip install "healthmgr[octavia]"',
                Exit.CONFIG,
            ) from None
        source = Path(parsed_args.octavia_conf)
        try:
            imported = conf_import.load(source)
        except conf_import.ImportError_ as exc:
            raise CliError(str(exc), Exit.CONFIG) from None
        header = (
            f"# healthmgr configuration imported from {source} (healthmgr config import-octavia)\n"
        )
        text = header + to_toml(imported.data)
        _check_imported(text)
        for line in imported.skipped:
            self.app.stderr.write(f"not carried over: {line}\n")
        for warning in imported.warnings:
            self.app.stderr.write(f"warning: {warning}\n")
        if parsed_args.output:
            target = Path(parsed_args.output)
            try:
                with target.open("x", encoding="utf-8") as handle:
                    handle.write(text)
            except FileExistsError:
                raise UsageError(f"--output: {target} exists; not overwritten") from None
            self.say(f"wrote {target}")
        else:
            self.app.stdout.write(text)
        return 0


def _check_imported(text: str) -> None:
    """The output must be a configuration healthmgr accepts (else: a bug here)."""
    import tempfile

    from healthmgr.config import load_settings

    with tempfile.NamedTemporaryFile("w", suffix=".toml") as handle:
        handle.write(text)
        handle.flush()
        try:
            load_settings(handle.name, env={})
        except ConfigError as exc:
            raise CliError(f"the imported configuration is not valid: {exc}", Exit.CONFIG) from None

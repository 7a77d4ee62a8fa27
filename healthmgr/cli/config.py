"""`healthmgr config check|show`: validate a configuration, print the effective one.

Both apply the ``HEALTHMGR_<SECTION>__<OPTION>`` environment overrides, as the
daemon would, so what they report is what ``healthmgr serve`` would run with.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from healthmgr.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Settings,
    load_settings,
    redacted,
    resolve_config_path,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="validate or show the configuration")
    commands = parser.add_subparsers(dest="config_command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="validate the configuration; print every problem, exit 1 if any"
    )
    _config_option(check)
    check.set_defaults(func=run_check)

    show = commands.add_parser("show", help="print the effective configuration, secrets redacted")
    _config_option(show)
    show.add_argument(
        "-f", "--format", choices=("toml", "json"), default="toml", help="output format"
    )
    show.set_defaults(func=run_show)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"config file (default: ${CONFIG_ENV_VAR}, else {DEFAULT_CONFIG_PATH} if it exists)",
    )


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def run_check(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return 1
    if settings.source:
        print(f"OK: {settings.source}")
    else:
        path, _ = resolve_config_path(args.config)
        print(f"OK: defaults (no file at {path or DEFAULT_CONFIG_PATH})")
    for warning in _warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _warnings(settings: Settings) -> list[str]:
    out = []
    if not settings.keys.master and not (
        settings.health_manager.octavia_compat and settings.health_manager.heartbeat_key
    ):
        out.append(
            "no [[keys.master]] and no Octavia heartbeat_key: every heartbeat will be rejected"
        )
    if settings.health_manager.octavia_compat and not settings.health_manager.heartbeat_key:
        out.append("octavia_compat = true needs heartbeat_key (or heartbeat_key_file)")
    return out


def run_show(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return 1
    data = redacted(settings)
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        header = f"# effective configuration: {settings.source or 'defaults'} + environment"
        print(header)
        print(to_toml(data), end="")
    return 0


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """TOML for the configuration's shapes: tables of scalars and lists, arrays of tables."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        tables = []
        for key, value in values.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                tables.append((key, value))
            elif value is None:
                lines.append(f"# {key} = (unset)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, entries in tables:
            for entry in entries:
                lines.append(f"\n[[{section}.{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string

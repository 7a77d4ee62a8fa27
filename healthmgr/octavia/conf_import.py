"""``octavia.conf`` -> the equivalent ``healthmgr.toml`` (``healthmgr config import-octavia``).

The file is read with oslo.config, Octavia's own configuration library (the
``octavia`` extra): its parser enumerates every option the file sets, and the
options carried over are read through ``ConfigOpts`` with the types and
defaults of Octavia 19.0.0's declarations (``octavia/common/config.py``), so a
value Octavia would refuse is refused here too, naming the option.

Carried over: ``[health_manager]`` (same names), ``[database] connection``
(and ``schema = "octavia"``: it is Octavia's database), ``[DEFAULT]
transport_url`` and ``control_exchange`` (the ``octavia`` failover driver),
``[DEFAULT] debug`` (log level). ``heartbeat_key`` turns ``octavia_compat``
on: the amphorae keep Octavia's agent. Every other option the file sets is
named in :attr:`Imported.skipped`, with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# [health_manager] options healthmgr has under the same name.
SAME_NAME = (
    "bind_ip",
    "bind_port",
    "controller_ip_port_list",
    "heartbeat_key",
    "heartbeat_interval",
    "heartbeat_timeout",
    "health_check_interval",
    "failover_threads",
    "failover_threshold",
    "sock_rlimit",
)
WHY_NOT: dict[tuple[str, str], str] = {
    ("health_manager", "health_update_threads"): (
        "healthmgr has no process pool per heartbeat: one trio loop per process; scale out with "
        "[health_manager] reuse_port and several processes"
    ),
    ("health_manager", "stats_update_threads"): (
        "statistics are written in the same batched flush as the health rows"
    ),
    ("health_manager", "*"): "not an option of Octavia 19's health manager healthmgr knows",
    ("database", "*"): "healthmgr sizes and recycles its own connection pool",
    ("DEFAULT", "*"): "not used by the health manager",
    ("*", "*"): "not the health manager's section (the API, worker or housekeeping own it)",
}


@dataclass
class Imported:
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "[section] option: why"
    warnings: list[str] = field(default_factory=list)


class ImportError_(ValueError):
    """The file cannot be read or holds a value Octavia would refuse."""


def _options() -> list[tuple[str, Any]]:
    from oslo_config import cfg

    hm = [
        cfg.IPOpt("bind_ip", default="127.0.0.1"),
        cfg.PortOpt("bind_port", default=5555),
        cfg.IntOpt("failover_threads", default=10),
        cfg.IntOpt("health_update_threads"),
        cfg.IntOpt("stats_update_threads"),
        cfg.StrOpt("heartbeat_key", secret=True),
        cfg.IntOpt("heartbeat_timeout", default=60),
        cfg.IntOpt("health_check_interval", default=3),
        cfg.IntOpt("sock_rlimit", default=0),
        cfg.IntOpt("failover_threshold"),
        cfg.ListOpt("controller_ip_port_list", default=[]),
        cfg.IntOpt("heartbeat_interval", default=10),
    ]
    default = [
        cfg.StrOpt("transport_url", secret=True),
        cfg.StrOpt("control_exchange", default="octavia"),
        cfg.BoolOpt("debug", default=False),
    ]
    database = [cfg.StrOpt("connection", secret=True)]
    return [("health_manager", hm), ("DEFAULT", default), ("database", database)]


def raw_options(path: Path) -> dict[str, list[str]]:
    """Every option the file sets, by section (oslo.config's own parser)."""
    from oslo_config import cfg

    sections: dict[str, dict[str, Any]] = {}
    try:
        cfg.ConfigParser(str(path), sections).parse()
    except OSError as exc:
        raise ImportError_(f"{path}: cannot read: {exc.strerror or exc}") from None
    except cfg.ParseError as exc:
        raise ImportError_(f"{path}: not an oslo.config file: {exc}") from None
    return {s: sorted(opts) for s, opts in sections.items()}


def load(path: Path) -> Imported:
    """Read ``path`` (an octavia.conf) and build the healthmgr configuration."""
    from oslo_config import cfg

    present = raw_options(path)
    conf = cfg.ConfigOpts()
    for group, opts in _options():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)
    try:
        conf(["--config-file", str(path)], project="octavia", default_config_files=[])
        hm = conf.health_manager
        default = {o: getattr(conf, o) for o in ("transport_url", "control_exchange", "debug")}
        connection = conf.database.connection
        values = {o: getattr(hm, o) for o in SAME_NAME}
    except (cfg.Error, ValueError) as exc:
        raise ImportError_(f"{path}: {exc}") from None
    out = Imported()
    out.data = _healthmgr(values, default, connection, out.warnings)
    out.skipped = _skipped(present)
    return out


def _healthmgr(
    hm: dict[str, Any], default: dict[str, Any], connection: str | None, warnings: list[str]
) -> dict[str, dict[str, Any]]:
    section: dict[str, Any] = {}
    for option in SAME_NAME:
        value = hm[option]
        if option in ("heartbeat_interval", "heartbeat_timeout", "health_check_interval"):
            value = float(value)
        if option == "failover_threshold" and value is None:
            warnings.append(
                "[health_manager] failover_threshold is unset in Octavia (no "
                'breaker): imported as "off"; consider healthmgr\'s "10%"'
            )
            value = "off"
        if option == "heartbeat_key" and not value:
            warnings.append(
                "[health_manager] heartbeat_key is not set: Octavia's amphorae "
                "cannot be heard until it is"
            )
            continue
        if option == "sock_rlimit" and not value:
            continue
        section[option] = value
    if hm.get("heartbeat_key"):
        section["octavia_compat"] = True
    data: dict[str, dict[str, Any]] = {"health_manager": section}
    if connection:
        data["database"] = {"connection": connection, "schema": "octavia"}
    else:
        warnings.append("[database] connection is not set: set it to Octavia's database")
    if default["transport_url"]:
        data["failover"] = {
            "driver": "octavia",
            "transport_url": default["transport_url"],
            "control_exchange": default["control_exchange"],
        }
    else:
        warnings.append(
            "[DEFAULT] transport_url is not set: failovers use the record driver "
            'until [failover] driver = "octavia" and transport_url are set'
        )
    if default["debug"]:
        data["logging"] = {"level": "DEBUG"}
    return data


def _skipped(present: dict[str, list[str]]) -> list[str]:
    carried = {("health_manager", o) for o in SAME_NAME} | {
        ("DEFAULT", "transport_url"),
        ("DEFAULT", "control_exchange"),
        ("DEFAULT", "debug"),
        ("database", "connection"),
    }
    out = []
    for section, options in sorted(present.items()):
        for option in options:
            if (section, option) in carried:
                continue
            why = (
                WHY_NOT.get((section, option)) or WHY_NOT.get((section, "*")) or WHY_NOT[("*", "*")]
            )
            out.append(f"[{section}] {option}: {why}")
    return out

"""Output formatters of our own, registered as cliff formatter plugins (pyproject.toml).

* ``healthmgr.formatter.config``: ``toml`` (the default of ``config show``), beside
  cliff's json and yaml: the effective configuration, as a file ``config check`` accepts.
* ``healthmgr.formatter.status``: ``table`` (the default of ``status show``) draws the
  status tree; json and yaml print Octavia's ``{"statuses": {"loadbalancer": ...}}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

import tomli_w
from cliff import columns
from cliff.formatters import base


def _machine(value: Any) -> Any:
    return value.machine_readable() if isinstance(value, columns.FormattableColumn) else value


class TomlFormatter(base.SingleFormatter):
    """Sections (the columns) as TOML tables."""

    def add_argument_group(self, parser: argparse.ArgumentParser) -> None:
        pass

    def emit_one(
        self,
        column_names: Sequence[str],
        data: Sequence[Any],
        stdout: TextIO,
        parsed_args: argparse.Namespace,
    ) -> None:
        sections = {name: _machine(value) for name, value in zip(column_names, data, strict=True)}
        stdout.write(to_toml(sections))


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """TOML (tomli-w) of the configuration's sections; unset options named in a comment."""
    parts = []
    for section, values in data.items():
        unset = [key for key, value in values.items() if value is None]
        note = f"# unset: {', '.join(unset)}\n" if unset else ""
        table = {key: _no_none(value) for key, value in values.items() if value is not None}
        parts.append(note + tomli_w.dumps({section: table}))
    return "\n".join(parts)


def _no_none(value: Any) -> Any:
    """TOML has no null: unset fields of an array of tables are left out."""
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    return value


class StatusTree(columns.FormattableColumn[dict[str, Any]]):
    """Octavia's status tree; ``extras`` (protocols, ports, algorithms) only for drawing."""

    def __init__(self, value: dict[str, Any], extras: dict[str, dict[str, Any]]) -> None:
        super().__init__(value)
        self.extras = extras

    def machine_readable(self) -> dict[str, Any]:
        return self._value

    def human_readable(self) -> str:
        return draw_tree(self._value["loadbalancer"], self.extras)


class TreeFormatter(base.SingleFormatter):
    """The status tree drawn with box-drawing branches, statuses in aligned columns."""

    def add_argument_group(self, parser: argparse.ArgumentParser) -> None:
        pass

    def emit_one(
        self,
        column_names: Sequence[str],
        data: Sequence[Any],
        stdout: TextIO,
        parsed_args: argparse.Namespace,
    ) -> None:
        for value in data:
            text = value.human_readable() if isinstance(value, StatusTree) else str(value)
            stdout.write(text + "\n")


def draw_tree(lb: dict[str, Any], extras: dict[str, dict[str, Any]]) -> str:
    """load balancer -> listeners -> pools -> health monitor and members, one per line:
    the object, then its provisioning and operating status."""
    lines: list[tuple[str, str, str]] = []

    def add(prefix: str, label: str, node: dict[str, Any]) -> None:
        lines.append(
            (prefix + label, node.get("provisioning_status", ""), node.get("operating_status", ""))
        )

    add("", f"load balancer {_name(lb)}", lb)
    children: list[tuple[str, dict[str, Any]]] = [
        ("listener", li) for li in lb.get("listeners", [])
    ]
    children += [("pool", p) for p in lb.get("pools", [])]
    _branches(children, "", extras, add)
    width = max(len(text) for text, _, _ in lines)
    prov_width = max(len(prov) for _, prov, _ in lines)
    return "\n".join(
        f"{text:<{width}}  {prov:<{prov_width}}  {op}".rstrip() for text, prov, op in lines
    )


def _branches(
    children: list[tuple[str, dict[str, Any]]],
    indent: str,
    extras: dict[str, dict[str, Any]],
    add: Any,
) -> None:
    for i, (kind, node) in enumerate(children):
        last = i == len(children) - 1
        branch = indent + ("└── " if last else "├── ")
        add(branch, _label(kind, node, extras), node)
        below: list[tuple[str, dict[str, Any]]] = []
        if kind == "listener":
            below = [("pool", p) for p in node.get("pools", [])]
        elif kind == "pool":
            if node.get("health_monitor"):
                below.append(("health monitor", node["health_monitor"]))
            below += [("member", m) for m in node.get("members", [])]
        _branches(below, indent + ("    " if last else "│   "), extras, add)


def _label(kind: str, node: dict[str, Any], extras: dict[str, dict[str, Any]]) -> str:
    more = extras.get(node.get("id", ""), {})
    if kind == "listener" and more:
        return f"listener {_name(node)} {more['protocol']}:{more['protocol_port']}"
    if kind == "pool" and more:
        return f"pool {_name(node)} {more['lb_algorithm']}"
    if kind == "member":
        return f"member {_name(node)} {node['address']}:{node['protocol_port']}"
    if kind == "health monitor":
        return " ".join(filter(None, ("health monitor", node.get("name"), node["type"])))
    return f"{kind} {_name(node)}"


def _name(node: dict[str, Any]) -> str:
    return node.get("name") or node.get("id", "")

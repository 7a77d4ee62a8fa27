"""What an operator reads of an invalid configuration: every problem, one line each,
named by its dotted key, and by the environment variable it came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError


class ConfigError(Exception):
    """Invalid configuration. ``problems`` names every bad key or value."""

    def __init__(self, problems: Iterable[str], source: str | None = None) -> None:
        self.problems: list[str] = list(problems) or ["invalid configuration"]
        self.source = source
        where = f"invalid configuration ({source})" if source else "invalid configuration"
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{where}: {self.problems[0]}{tail}")


def problems(exc: ValidationError, from_env: Mapping[str, str]) -> list[str]:
    """One line per error; ``from_env`` maps "section.option" to the variable that set it."""
    out = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "healthmgr_option":
            loc.append(ctx["option"])
        if error["type"] == "extra_forbidden":
            message = "unknown section" if len(loc) == 1 else "unknown option"
        else:
            message = _message(error)
        top = ".".join(str(p) for p in loc[:2] if isinstance(p, str))
        origin = f" (from {from_env[top]})" if len(loc) >= 2 and top in from_env else ""
        out.append(f"{_dotted(loc)}: {message}{origin}")
    return out


def _dotted(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    if error["type"] in ("healthmgr", "healthmgr_option"):
        return msg
    msg = msg[0].lower() + msg[1:]
    value = error.get("input")
    if isinstance(value, dict | list) or value is None:
        return msg
    return f"{value!r}: {msg}"

"""The configuration's value types and the checks they share (no I/O but secret files).

Every check raises :func:`err` (a message used as is) or :func:`problem` (reported
under another option of the same section); :mod:`healthmgr.config.errors` turns
them into the lines operators read.
"""

from __future__ import annotations

import ipaddress
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

from healthmgr.secret_files import SecretFileError, read_secret_file


def err(kind: str, text: str) -> PydanticCustomError:
    """A validation error whose message is ``text`` as is (``kind`` is for tests and logs)."""
    return PydanticCustomError("healthmgr", "{text}", {"text": text, "kind": kind})


def problem(option: str, text: str) -> PydanticCustomError:
    """An error raised by a model validator, reported under ``<section>.<option>``."""
    return PydanticCustomError("healthmgr_option", "{text}", {"option": option, "text": text})


@dataclass(frozen=True, slots=True)
class FileSecret:
    """A secret read from a file at load time; prints as its path, never its value."""

    path: Path
    value: str = field(repr=False)

    def __str__(self) -> str:
        return str(self.path)


def _read_secret_file(raw: object) -> FileSecret:
    if isinstance(raw, FileSecret):
        return raw
    if not isinstance(raw, str | os.PathLike) or not str(raw):
        raise err("secret_file", f"expected a file path, got {raw!r}")
    try:
        return FileSecret(Path(raw), read_secret_file(raw))
    except SecretFileError as exc:
        raise err("secret_file", str(exc)) from None


SecretFile = Annotated[
    FileSecret, PlainValidator(_read_secret_file), PlainSerializer(lambda s: str(s.path))
]


def _strict_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise err("int_type", f"expected an integer, got {value!r}")


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise err("port", f"{value} is not a valid port (1-65535)")
    return value


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, PlainValidator(lambda v: _port(_strict_int(v)))]


def ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise err("ip", f"{value!r} is not an IPv4 or IPv6 address") from None


def _failover_threshold(value: object) -> int | str:
    """A count (>= 1), a share of the fleet ("10%"), or "off"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text.isdigit() and int(text) >= 1:
        return int(text)  # from the environment: every value is a string
    if text == "off":
        return "off"
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if 0 < share <= 100:
            return text
    raise err(
        "threshold",
        f'{value!r} is not a count, a share of the fleet such as "10%", or "off"',
    )


Threshold = Annotated[int | str, PlainValidator(_failover_threshold)]


def parse_url(text: str) -> Any:
    """A SQLAlchemy URL, or the error that names what is wrong."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text)
    except (ArgumentError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise err(
            "url", f"not a database URL ({reason}); e.g. postgresql+psycopg://user@host/db"
        ) from None


def placeholders(arg: str) -> list[str]:
    """The ``{name}`` placeholders of one argument of the exec driver's command."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(arg) if name is not None]
    except ValueError as exc:
        raise err(
            "placeholder", f"{arg!r}: {exc} (write {{{{ and }}}} for literal braces)"
        ) from None

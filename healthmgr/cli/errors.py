"""One exit-status scheme for every ``healthmgr`` command (docs/cli.md, "Exit status").

Every error is one line on stderr, ``healthmgr: error: ...``, and one of these
statuses; nothing is written when a command fails.
"""

from __future__ import annotations

import enum
import re


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1  # `health` found something that needs attention; or another failure
    USAGE = 2  # a bad argument or value
    CONFIG = 3  # the configuration is invalid
    DB_UNREACHABLE = 4  # the database cannot be reached
    SCHEMA = 5  # the database schema is not at this release's head
    NOT_FOUND = 6  # no such object, or a name that several objects share
    CONFLICT = 7  # the object is not in a state the action applies to; nothing changed
    INTERRUPTED = 130  # SIGINT


class CliError(Exception):
    """An error the CLI prints as one line, exiting with ``code``."""

    code: Exit = Exit.FAILED

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class Reported(CliError):
    """The command printed its problems itself; only the exit status is left."""

    def __init__(self, code: Exit) -> None:
        super().__init__("", code)


class UsageError(CliError):
    code = Exit.USAGE


class NotFound(CliError):
    code = Exit.NOT_FOUND


class Conflict(CliError):
    code = Exit.CONFLICT


def classify(exc: BaseException) -> CliError | None:
    """The CliError for a known library error, or None for anything else."""
    from sqlalchemy import exc as sa_exc

    from healthmgr.config import ConfigError
    from healthmgr.db.admin import StateConflict
    from healthmgr.db.engine import BadDatabaseURL, DatabaseUnavailable
    from healthmgr.db.migrate import SchemaError
    from healthmgr.db.queries import LookupFailed

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ConfigError):
        return CliError(str(exc), Exit.CONFIG)
    if isinstance(exc, BadDatabaseURL):
        return CliError(str(exc), Exit.CONFIG)
    if isinstance(exc, SchemaError):
        return CliError(str(exc), Exit.SCHEMA)
    if isinstance(exc, DatabaseUnavailable):
        return CliError(str(exc), Exit.DB_UNREACHABLE)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        from healthmgr.db.engine import unavailable

        url = getattr(getattr(exc, "connection", None), "url", None)
        message = str(unavailable(url, exc)) if url else _one_line(exc)
        return CliError(message, Exit.DB_UNREACHABLE)
    if isinstance(exc, LookupFailed):
        return CliError(str(exc), Exit.NOT_FOUND)
    if isinstance(exc, StateConflict):
        return CliError(f"{exc}; nothing changed", Exit.CONFLICT)
    return None


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


_HINT = re.compile(r"`healthmgr (db|config)( [^`]*)?`")


def keep_location(message: str, config_args: list[str], db_args: list[str]) -> str:
    """Hints like "run `healthmgr db upgrade`" with the user's ``--config`` (and, for
    ``db`` hints, ``--db-url``), so following the hint acts on the same database."""

    def add(match: re.Match[str]) -> str:
        extra = config_args + (db_args if match.group(1) == "db" else [])
        tail = "".join(" " + a for a in extra)
        return f"`healthmgr {match.group(1)}{match.group(2) or ''}{tail}`"

    return _HINT.sub(add, message) if config_args or db_args else message

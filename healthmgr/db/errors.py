"""Database errors by what to do about them (provisional: refined on merge)."""

from __future__ import annotations

import enum
from typing import NamedTuple

from sqlalchemy import exc


class ErrorClass(enum.Enum):
    CONNECTION = "connection"
    CONTENTION = "contention"
    REFUSED_DATA = "refused_data"
    UNKNOWN = "unknown"


class Classified(NamedTuple):
    kind: ErrorClass
    reason: str


_PG_CONTENTION = {"40001", "40P01", "55P03", "57014"}
_MYSQL_CONNECTION = {1040, 1053, 2002, 2003, 2006, 2013, 2055}
_MYSQL_CONTENTION = {1205, 1213, 1020, 1969, 3024}
_SQLITE_CONTENTION = ("database is locked", "database table is locked")


def classify(error: BaseException) -> Classified:
    orig = getattr(error, "orig", error)
    sqlstate = getattr(orig, "sqlstate", None) or ""
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    text = str(orig)
    if sqlstate in _PG_CONTENTION or code in _MYSQL_CONTENTION:
        return Classified(ErrorClass.CONTENTION, "contention")
    if any(t in text for t in _SQLITE_CONTENTION):
        return Classified(ErrorClass.CONTENTION, "contention")
    if sqlstate.startswith(("08", "57P")) or code in _MYSQL_CONNECTION:
        return Classified(ErrorClass.CONNECTION, "connection")
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return Classified(ErrorClass.CONNECTION, "connection")
    if sqlstate == "22003" or code in (1264, 1690) or "integer overflow" in text:
        return Classified(ErrorClass.REFUSED_DATA, "out_of_range")
    if sqlstate.startswith("23") or code in (1062, 1452, 4025, 3819) or "constraint" in text:
        return Classified(ErrorClass.REFUSED_DATA, "constraint")
    if sqlstate.startswith("22") or code in (1366, 1406):
        return Classified(ErrorClass.REFUSED_DATA, "data")
    bare = not sqlstate and code is None
    if bare and isinstance(error, exc.OperationalError | exc.InterfaceError):
        return Classified(ErrorClass.CONNECTION, "connection")
    return Classified(ErrorClass.UNKNOWN, "unknown")


def is_transient(error: BaseException) -> bool:
    """Worth retrying later: the connection or a lock, not the data."""
    return classify(error).kind in (ErrorClass.CONNECTION, ErrorClass.CONTENTION)

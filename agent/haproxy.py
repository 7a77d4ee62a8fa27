"""HAProxy stats socket: pure parsers for ``show info`` / ``show stat``, and a trio client.

The parsers take the text HAProxy prints and return plain frozen values; the
client only moves bytes. Both commands go over ONE connection
(``show info;show stat``) so the process information (and so the counters
epoch) always belongs to the same HAProxy worker as the counters: two
connections could straddle a reload and pair an old worker's Pid with a new
worker's zeroed counters.
"""

from __future__ import annotations

import csv
import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from healthmgr.wire.addresses import join_host_port, split_host_port

# Bound what we read: a huge answer means something is wrong, not more stats.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 5.0
QUERY = b"show info;show stat\n"


class HAProxyError(Exception):
    """The stats socket could not be reached or answered something unexpected."""


class RowType(enum.IntEnum):
    """HAProxy's ``type`` column in ``show stat``."""

    FRONTEND = 0
    BACKEND = 1
    SERVER = 2
    LISTENER = 3


@dataclass(frozen=True, slots=True)
class StatRow:
    """One ``show stat`` line, with the columns the agent uses typed."""

    pxname: str
    svname: str
    type: RowType
    status: str
    weight: int | None  # None where HAProxy leaves the column empty (frontends)
    scur: int
    bin: int
    bout: int
    stot: int
    ereq: int
    # The whole line, paired with the header only when asked (``fields``):
    # building a dict of ~100 columns per row was most of a poll's cost.
    header: tuple[str, ...] = field(default=(), compare=False, repr=False)
    values: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def fields(self) -> Mapping[str, str]:
        """Every column of the line by name."""
        return dict(zip(self.header, self.values, strict=False))


@dataclass(frozen=True, slots=True)
class Info:
    """``show info``: the process facts the counters epoch is derived from."""

    pid: int
    start_time_sec: int | None  # HAProxy >= 2.5; derive from uptime otherwise
    uptime_sec: int | None
    fields: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent reading of a HAProxy process."""

    info: Info
    rows: tuple[StatRow, ...]


# ---------------------------------------------------------------- parsing


def _int(value: str | None, column: str, default: int | None = 0) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise HAProxyError(f"column {column!r}: not an integer: {value!r}") from None


def parse_info(text: str) -> Info:
    """Parse ``show info`` (``Key: value`` lines)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if "Pid" not in fields:
        raise HAProxyError("show info: no 'Pid' line (is this a HAProxy stats socket?)")
    pid = _int(fields["Pid"], "Pid")
    assert pid is not None
    return Info(
        pid=pid,
        start_time_sec=_int(fields.get("Start_time_sec"), "Start_time_sec", None),
        uptime_sec=_int(fields.get("Uptime_sec"), "Uptime_sec", None),
        fields=fields,
    )


_TYPED = ("pxname", "svname", "type", "status", "weight", "scur", "bin", "bout", "stot", "ereq")
_NEEDED = ("pxname", "svname", "type", "status")
_ROW_TYPES = {str(t.value): t for t in RowType}


def _row(header: tuple[str, ...], pick: Callable[[list[str]], tuple[str, ...]],
         values: list[str]) -> StatRow:  # fmt: skip
    """One line, padded with "" to a column past the header's end (where absent columns point)."""
    if len(values) < 2:
        raise HAProxyError(f"show stat: short line {','.join(values)!r}")
    line = tuple(values)
    values.extend([""] * (len(header) + 1 - len(values)))
    px, sv, kind, status, weight, scur, bin_, bout, stot, ereq = pick(values)
    row_type = _ROW_TYPES.get(kind)
    if row_type is None:
        raise HAProxyError(f"show stat: unknown row type {kind!r}")
    return StatRow(
        pxname=px,
        svname=sv,
        type=row_type,
        status=status,
        weight=_int(weight, "weight", None),
        scur=_int(scur, "scur") or 0,
        bin=_int(bin_, "bin") or 0,
        bout=_int(bout, "bout") or 0,
        stot=_int(stot, "stot") or 0,
        ereq=_int(ereq, "ereq") or 0,
        header=header,
        values=line,
    )


def parse_stat(text: str) -> tuple[StatRow, ...]:
    """Parse ``show stat`` CSV; the header line starts with ``# ``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if start is None:
        raise HAProxyError("show stat: no '# pxname,...' header line")
    header = tuple(name.strip() for name in lines[start][2:].split(","))
    for needed in _NEEDED:
        if needed not in header:
            raise HAProxyError(f"show stat: header has no {needed!r} column")
    # Typed columns by position; an absent one reads the padding past the end.
    pick = operator.itemgetter(
        *(header.index(name) if name in header else len(header) for name in _TYPED)
    )
    body = [line for line in lines[start + 1 :] if line.strip()]
    return tuple(_row(header, pick, values) for values in csv.reader(body))


def parse_snapshot(text: str) -> Snapshot:
    """Parse the answer to ``show info;show stat`` (info first, then the CSV)."""
    header_at = text.find("\n# ")
    if text.startswith("# "):
        header_at = 0
    if header_at < 0:
        # HAProxy answers errors (bad level, unknown command) as plain text.
        first = text.strip().splitlines()[0] if text.strip() else "empty answer"
        raise HAProxyError(f"unexpected answer from the stats socket: {first[:200]}")
    return Snapshot(info=parse_info(text[:header_at]), rows=parse_stat(text[header_at:]))


# ---------------------------------------------------------------- I/O


@dataclass(frozen=True, slots=True)
class Address:
    """Where the stats socket is: a unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return join_host_port(self.host or "", self.port or 0)


def parse_address(text: str) -> Address:
    """``/run/haproxy.sock`` (any path with a ``/``), ``ip:port`` or ``[ipv6]:port``."""
    text = text.strip()
    if not text:
        raise ValueError("HAProxy stats socket address is empty")
    if text.startswith("unix:"):
        return Address(path=text[5:])
    if "/" in text:
        return Address(path=text)
    try:
        host, port = split_host_port(text)
    except ValueError:
        raise ValueError(f"HAProxy stats socket {text!r}: expected a path or ip:port") from None
    return Address(host=host, port=port)


async def _connect(address: Address) -> trio.abc.Stream:
    if address.path is not None:
        return await trio.open_unix_socket(address.path)
    assert address.host is not None and address.port is not None
    return await trio.open_tcp_stream(address.host, address.port)


async def run_command(
    address: Address | str,
    command: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    limit: int = MAX_RESPONSE_BYTES,
) -> str:
    """Send one command line; HAProxy answers and closes (non-interactive mode)."""
    if isinstance(address, str):
        address = parse_address(address)
    chunks: list[bytes] = []
    size = 0
    try:
        with trio.fail_after(timeout):
            stream = await _connect(address)
            async with stream:
                await stream.send_all(command if command.endswith(b"\n") else command + b"\n")
                while chunk := await stream.receive_some(65536):
                    size += len(chunk)
                    if size > limit:
                        raise HAProxyError(f"{address}: answer larger than {limit} bytes")
                    chunks.append(chunk)
    except trio.TooSlowError:
        raise HAProxyError(f"{address}: no complete answer within {timeout:g}s") from None
    except OSError as exc:
        raise HAProxyError(f"{address}: {exc.strerror or exc}") from None
    return b"".join(chunks).decode("utf-8", errors="replace")


async def query(address: Address | str, *, timeout: float = DEFAULT_TIMEOUT) -> Snapshot:
    """Read ``show info`` and ``show stat`` from one HAProxy process, consistently."""
    return parse_snapshot(await run_command(address, QUERY, timeout=timeout))

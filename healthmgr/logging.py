"""Logs through structlog: JSON lines when not on a terminal, readable on one.

Standard-library loggers (alembic, SQLAlchemy, trio, warnings) go through the
same renderer, so every line of the daemon has one shape. Rejected packets
are logged through :class:`RateLimitedLogger`: at most one line per reason
per interval, with the count of lines it held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

from healthmgr.wire.addresses import format_peer

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_HANDLER_NAME = "healthmgr"


def _renderer(fmt: str, stream: TextIO) -> Any:
    if fmt == "auto":
        fmt = "console" if _isatty(stream) else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=_isatty(stream))
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    raise ValueError(f"log format {fmt!r} is not one of auto, json, console")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _NamedPrintLogger(structlog.PrintLogger):
    """PrintLogger that remembers the name given to ``get_logger`` (for the ``logger`` field)."""

    def __init__(self, file: TextIO, name: str | None = None) -> None:
        super().__init__(file)
        self.name = name


def _add_name(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _filter_level(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # The level lives in module state (not baked into a wrapper class) so that a new level
    # reaches every logger at once, including ones that are already bound.
    if _LEVEL_NUMBERS.get(method_name, logging.INFO) < _state["level_no"]:
        raise structlog.DropEvent
    return event_dict


_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_state: dict[str, Any] = {"level_no": logging.INFO}


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr), at ``level``.

    Idempotent: call it again to reconfigure; :func:`set_level` changes only the level.
    """
    stream = sys.stderr if stream is None else stream
    renderer = _renderer(fmt, stream)
    _state.update(fmt=fmt, stream=stream)
    set_level(level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any] = []
    if isinstance(renderer, structlog.processors.JSONRenderer):
        # Tracebacks as data, without local variables: they may hold keys and passwords.
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        tail = [structlog.processors.ExceptionRenderer(transformer)]

    structlog.configure(
        processors=[
            _filter_level,
            _add_name,
            *shared,
            structlog.processors.StackInfoRenderer(),
            *tail,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=lambda *args: _NamedPrintLogger(stream, args[0] if args else None),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    """Change the level of every logger, structlog and stdlib (the SIGHUP path)."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    _state["level_no"] = logging.getLevelName(level)
    logging.getLogger().setLevel(_state["level_no"])


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A lazy structlog logger: safe to create at import time, before configure_logging."""
    return structlog.get_logger(name, **initial) if name else structlog.get_logger(**initial)


# -- rate limiting -----------------------------------------------------------


@dataclass(slots=True)
class _Window:
    opened: float
    suppressed: int = 0
    used: int = 1


@dataclass(slots=True)
class RateLimiter:
    """At most ``burst`` events per key per ``interval`` seconds; counts what it holds back.

    Pure: the clock is injected. ``interval`` 0 lets everything through.
    """

    interval: float
    clock: Callable[[], float] = time.monotonic
    burst: int = 1
    _windows: dict[str, _Window] = field(default_factory=dict)

    def tracks(self, key: str) -> bool:
        """Whether ``key`` has a window open now (a repeat would be held back)."""
        window = self._windows.get(key)
        return window is not None and self.clock() - window.opened < self.interval

    def admit(self, key: str) -> int | None:
        """None: hold this one back. An int: emit it, and that many were held back before."""
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.opened >= self.interval:
            held = window.suppressed if window else 0
            self._windows[key] = _Window(now)
            return held
        if window.used < self.burst:
            window.used += 1
            return 0
        window.suppressed += 1
        return None

    def drain(self) -> dict[str, int]:
        """Counts held back in windows that have closed, for a summary line; resets them."""
        now = self.clock()
        out = {}
        for key, window in list(self._windows.items()):
            if now - window.opened >= self.interval:
                if window.suppressed:
                    out[key] = window.suppressed
                del self._windows[key]
        return out


class RateLimitedLogger:
    """Logs rejected datagrams: one line per reason per interval, with source and reason.

    A flood from many sources is one key (the reason), so it costs one line per
    interval whatever its size; the line says how many were held back.
    """

    def __init__(
        self,
        interval: float,
        logger: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        event: str = "heartbeat rejected",
    ) -> None:
        self.limiter = RateLimiter(interval, clock)
        self.logger = logger if logger is not None else get_logger("healthmgr.receiver")
        self.event = event

    @property
    def interval(self) -> float:
        return self.limiter.interval

    @interval.setter
    def interval(self, value: float) -> None:
        self.limiter.interval = value  # reloadable: logging.rejected_log_interval

    def rejected(self, reason: str, source: object, detail: str = "") -> bool:
        """Log one rejection if its window allows; returns whether a line was written."""
        held = self.limiter.admit(str(reason))
        if held is None:
            return False
        fields: dict[str, Any] = {"reason": str(reason), "source": format_peer(source)}
        if detail:
            fields["detail"] = detail
        if held:
            fields["suppressed"] = held
        self.logger.warning(self.event, **fields)
        return True

    def flush(self) -> int:
        """Write the counts still held back once their window closed (call it periodically)."""
        drained = self.limiter.drain()
        for reason, held in sorted(drained.items()):
            self.logger.warning(self.event, reason=reason, suppressed=held, summary=True)
        return len(drained)


def one_line(exc: BaseException) -> str:
    """An error for a log field: its first line, at most 300 characters."""
    text = str(exc)
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]

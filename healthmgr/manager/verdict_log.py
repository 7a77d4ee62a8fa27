"""Verdicts with their reasons, logged rate-limited and counted.

Every failover, deferral, breaker change, listener-count mismatch, late or
unknown-amphora heartbeat is a line with the amphora, its load balancer and the
reason; a repeated one (the same kind for the same amphora) is held back for
``interval`` seconds and then summarised with the count held back. Each kind
also has a budget of ``per_kind`` lines per interval: a fleet-wide event (a
restart's first heartbeats all late, a mass outage) is that many lines and one
summary, not a line and a rate-limit window per amphora (100,000 of them held
about 170 bytes each for a minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from healthmgr.logging import RateLimiter
from healthmgr.wire.ids import Id, id_str

log = structlog.get_logger("healthmgr.verdicts")

LEVELS = {"error", "warning", "info"}
PER_KIND = 100  # lines of one kind per interval


class VerdictLog:
    def __init__(
        self,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        per_kind: int = PER_KIND,
    ):
        self.limiter = RateLimiter(interval, clock)  # per kind and amphora
        self.kinds = RateLimiter(interval, clock, burst=per_kind)  # lines of one kind

    def say(
        self,
        event: str,
        *,
        kind: str,
        amphora_id: Id | str | None = None,
        lb_id: Id | str | None = None,
        level: str = "warning",
        **fields: Any,
    ) -> bool:
        """Log one verdict unless the same kind for the same amphora was logged recently."""
        amp = _text(amphora_id)
        key = f"{kind}:{amp}"
        if not self.limiter.tracks(key):  # a new line: it counts against its kind's budget
            over = self.kinds.admit(kind)
            if over is None:
                return False
            if over:
                _held_back(kind, over)
        held = self.limiter.admit(key)
        if held is None:
            return False
        out: dict[str, Any] = {"reason": kind, **fields}
        if amp is not None:
            out["amphora_id"] = amp
        if lb_id is not None:
            out["lb_id"] = _text(lb_id)
        if held:
            out["suppressed"] = held
        getattr(log, level if level in LEVELS else "warning")(event, **out)
        return True

    def flush(self) -> None:
        for key, held in sorted(self.limiter.drain().items()):
            kind, _, amp = key.partition(":")
            log.warning("verdicts held back", reason=kind, amphora_id=amp, suppressed=held)
        for kind, over in sorted(self.kinds.drain().items()):
            _held_back(kind, over)


def _held_back(kind: str, held: int) -> None:
    log.warning("verdicts held back", reason=kind, amphorae="over the budget", suppressed=held)


def _text(value: Id | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return id_str(value)

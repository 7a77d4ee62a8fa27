"""Verdicts with their reasons, logged rate-limited and counted.

Every failover, deferral, breaker change, listener-count mismatch, late or
unknown-amphora heartbeat is a line with the amphora, its load balancer and the
reason; a repeated one (the same kind for the same amphora) is held back for
``interval`` seconds and then summarised with the count held back.
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


class VerdictLog:
    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limiter = RateLimiter(interval, clock)

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
        held = self.limiter.admit(f"{kind}:{amp}")
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


def _text(value: Id | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return id_str(value)

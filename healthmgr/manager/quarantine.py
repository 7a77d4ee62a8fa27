"""Rows the database refused, or returned in a shape we cannot read.

Each one is counted (``healthmgr_rows_rejected_total{table,reason}``) and
logged, rate-limited per table and amphora, with the amphora and the reason:
the operator's quarantine view (docs/operations.md, "Refused rows").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog

from healthmgr.logging import RateLimiter
from healthmgr.manager.metrics import Metrics
from healthmgr.rules.batch import RefusedRow

log = structlog.get_logger("healthmgr.quarantine")


class Quarantine:
    def __init__(
        self, metrics: Metrics, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.limiter = RateLimiter(interval, clock)

    def refused(self, rows: Iterable[RefusedRow], event: str = "row refused") -> None:
        for row in rows:
            self.metrics.count_rejected_row(row.table, row.reason)
            held = self.limiter.admit(f"{row.table}:{row.amphora_id or row.key}")
            if held is None:
                continue
            fields: dict[str, object] = {
                "table": row.table,
                "key": row.key,
                "amphora_id": row.amphora_id,
                "reason": row.reason,
                "detail": row.detail,
            }
            if held:
                fields["suppressed"] = held
            log.error(event, **fields)

    def flush(self) -> None:
        """Summary lines for what was held back in closed windows."""
        for key, held in sorted(self.limiter.drain().items()):
            log.error("row refused", summary=True, key=key, suppressed=held)

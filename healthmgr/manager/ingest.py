"""Per-datagram path: verify, decode, replay check, apply to the view.

Pure apart from the clock values passed in; the receiver calls ``datagram``
for every packet it drains. Counts are kept locally and published to
Prometheus once per burst, not per packet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from healthmgr.manager.view import Applied, Arrival, View
from healthmgr.metrics import Metrics
from healthmgr.wire.errors import Rejected
from healthmgr.wire.values import Heartbeat

Decode = Callable[[bytes, int], tuple[Heartbeat, bool]]  # -> (heartbeat, newest) or Rejected
OnReject = Callable[[object, Rejected], None]


class Ingest:
    def __init__(self, decode: Decode, view: View, metrics: Metrics, on_reject: OnReject):
        self.decode = decode
        self.view = view
        self.metrics = metrics
        self.on_reject = on_reject
        self.counts: Counter[str] = Counter()
        self.lags: list[float] = []

    def datagram(self, data: bytes, addr: object, mono: float, wall_ms: int) -> None:
        try:
            hb, newest = self.decode(data, wall_ms)
        except Rejected as exc:
            self.counts[exc.reason] += 1  # a StrEnum: the same key as its value
            self.on_reject(addr, exc)
            return
        result = self.view.apply(Arrival(hb, mono, wall_ms, newest), mono)
        self.counts[result.value] += 1  # Counter: local, published per burst

    def release(self, arrivals: list[Arrival], now: float) -> None:
        """Apply heartbeats that waited for their topology."""
        for arrival in arrivals:
            result = self.view.apply(arrival, now)
            self.counts[result.value] += 1
            if result is not Applied.QUEUED:
                self.lags.append(now - arrival.mono)

    def publish(self) -> None:
        """Move the local counts into the Prometheus metrics."""
        if self.view.superseded:
            self.counts["superseded"] += self.view.superseded
            self.view.superseded = 0
        if self.counts:
            for result, n in self.counts.items():
                if result != Applied.QUEUED.value:
                    self.metrics.count_heartbeat(result, n)
            self.counts.clear()
        for lag in self.lags:
            self.metrics.observe_processing_lag(lag)
        self.lags.clear()
        self.metrics.set_tracked(self.view.tracked())

"""Per-datagram path: verify, decode, replay check, apply to the view.

Pure apart from the clock values passed in; the receiver calls ``datagram``
for every packet it drains. Counts are kept locally and published to
Prometheus once per burst, not per packet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from healthmgr.manager.metrics import Metrics
from healthmgr.manager.verdict_log import VerdictLog
from healthmgr.manager.view import Applied, Arrival, Event, View
from healthmgr.wire.errors import Rejected
from healthmgr.wire.values import Heartbeat

Decode = Callable[[bytes, int], tuple[Heartbeat, bool]]  # -> (heartbeat, newest) or Rejected
OnReject = Callable[[object, Rejected], None]


class Ingest:
    def __init__(
        self,
        decode: Decode,
        view: View,
        metrics: Metrics,
        on_reject: OnReject,
        verdicts: VerdictLog | None = None,
    ):
        self.decode = decode
        self.view = view
        self.metrics = metrics
        self.on_reject = on_reject
        self.verdicts = verdicts or VerdictLog()
        self.counts: Counter[str] = Counter()
        self.lags: list[float] = []

    def datagram(self, data: bytes, addr: object, mono: float, wall_ms: int) -> None:
        try:
            hb, newest = self.decode(data, wall_ms)
        except Rejected as exc:
            self.counts[exc.reason.value] += 1
            self.on_reject(addr, exc)
            return
        result = self.view.apply(Arrival(hb, mono, wall_ms, newest), mono)
        self.counts[result.value] += 1  # Counter: local, published per burst
        if result is Applied.UNKNOWN_AMPHORA:
            self._unknown(hb, addr)

    def release(self, arrivals: list[Arrival], now: float) -> None:
        """Apply heartbeats that waited for their topology."""
        for arrival in arrivals:
            result = self.view.apply(arrival, now)
            self.counts[result.value] += 1
            if result is not Applied.QUEUED:
                self.lags.append(now - arrival.mono)
            if result is Applied.UNKNOWN_AMPHORA:
                self._unknown(arrival.heartbeat, None)

    def _unknown(self, hb: Heartbeat, addr: object) -> None:
        self.verdicts.say(
            "verified heartbeat from an amphora that is not in the database; ignored",
            kind="unknown_amphora", amphora_id=hb.amphora_id,
            source=_address(addr) if addr is not None else None,
        )

    def _events(self, events: list[Event]) -> None:
        for e in events:
            if e.kind == "listener_count_mismatch":
                self.metrics.count_listener_mismatch()
                self.verdicts.say(
                    "listener count mismatch: amphora_health not refreshed (HAProxy may have "
                    "failed to load part of its configuration)",
                    kind=e.kind, amphora_id=e.amphora_id, lb_id=e.lb_id, **e.detail,
                )
            elif e.kind == "deleted_load_balancer":
                self.verdicts.say(
                    "heartbeat from an amphora whose load balancer is DELETED: not healthy, "
                    "nothing written (R27)",
                    kind=e.kind, amphora_id=e.amphora_id, lb_id=e.lb_id, **e.detail,
                )
            elif e.kind == "late":
                self.verdicts.say(
                    "heartbeat processed too late; no status and no health written",
                    kind=e.kind, amphora_id=e.amphora_id, lb_id=e.lb_id, **e.detail,
                )

    def publish(self) -> None:
        """Move the local counts into the Prometheus metrics; log the view's verdicts."""
        if self.view.events:
            self._events(self.view.drain_events())
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


def _address(source: object) -> str:
    if isinstance(source, tuple) and len(source) >= 2:
        host, port = source[0], source[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(source)

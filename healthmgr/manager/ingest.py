"""Per-datagram path: verify, decode, replay check, apply to the view.

Pure apart from the clock values passed in; the receiver calls ``datagram``
for every packet it drains. Counts are kept locally and published to
Prometheus once per burst, not per packet.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from healthmgr.manager.metrics import Metrics
from healthmgr.manager.verdict_log import VerdictLog
from healthmgr.manager.view import Applied, Arrival, Event, View
from healthmgr.wire.addresses import format_peer
from healthmgr.wire.errors import Rejected
from healthmgr.wire.ids import id_str
from healthmgr.wire.values import Heartbeat

Decode = Callable[[bytes, int], tuple[Heartbeat, bool] | Rejected]  # (heartbeat, newest)
OnReject = Callable[[object, Rejected], None]

RESTART_LINES = 20  # Octavia agent restarts logged per interval, one per amphora
RESTART_LOG_INTERVAL = 10.0


class RestartLog:
    """Octavia agent restarts: a line per amphora, at most ``lines`` per ``interval``
    seconds (a replay of captured heartbeats for many amphorae is one line per
    interval beyond that, with the count)."""

    def __init__(
        self,
        interval: float,
        *,
        lines: int = RESTART_LINES,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        self.interval = interval
        self.lines = lines
        self.clock = clock
        self.log = logger if logger is not None else structlog.get_logger("healthmgr.receiver")
        self._opened = -float("inf")
        self._logged: set[bytes] = set()
        self._held = 0

    def restart(self, amphora_id: bytes, previous: int | None, seq: int) -> None:
        self.flush()
        if amphora_id in self._logged or len(self._logged) >= self.lines:
            self._held += 1
            return
        self._logged.add(amphora_id)
        self.log.warning(
            "octavia agent restarted", amphora_id=id_str(amphora_id), previous_seq=previous, seq=seq
        )

    def flush(self) -> None:
        """Open a new window when the last one is over; say what it held back."""
        now = self.clock()
        if now - self._opened < self.interval:
            return
        if self._held:
            self.log.warning(
                "octavia agent restarts not logged", suppressed=self._held, summary=True
            )
        self._opened, self._logged, self._held = now, set(), 0


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
        self.restarts = 0
        self.restart_log = RestartLog(RESTART_LOG_INTERVAL)

    def octavia_restart(self, amphora_id: bytes, previous: int | None, seq: int) -> None:
        """The decoder took an Octavia heartbeat as its agent's restart."""
        self.restarts += 1
        self.restart_log.restart(amphora_id, previous, seq)

    def datagram(self, data: bytes, addr: object, mono: float, wall_ms: int) -> None:
        try:
            decoded = self.decode(data, wall_ms)
        except Rejected as exc:
            self.counts[exc.reason] += 1  # a StrEnum: the same key as its value
            self.on_reject(addr, exc)
            return
        if decoded.__class__ is Rejected:  # returned, not raised: see Decoder.decode
            self.counts[decoded.reason] += 1  # type: ignore[union-attr]
            self.on_reject(addr, decoded)  # type: ignore[arg-type]
            return
        hb, newest = decoded  # type: ignore[misc]
        result = self.view.apply(Arrival(hb, mono, wall_ms, newest, addr), mono)
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
                self._unknown(arrival.heartbeat, arrival.source)

    def _unknown(self, hb: Heartbeat, addr: object) -> None:
        self.verdicts.say(
            "verified heartbeat from an amphora that is not in the database; ignored",
            kind="unknown_amphora",
            amphora_id=hb.amphora_id,
            source=format_peer(addr) if addr is not None else None,
        )

    def _events(self, events: list[Event]) -> None:
        for e in events:
            if e.kind == "listener_count_mismatch":
                self.metrics.count_listener_mismatch()
                self.verdicts.say(
                    "listener count mismatch: amphora_health not refreshed (HAProxy may have "
                    "failed to load part of its configuration)",
                    kind=e.kind,
                    amphora_id=e.amphora_id,
                    lb_id=e.lb_id,
                    **e.detail,
                )
            elif e.kind == "deleted_load_balancer":
                self.verdicts.say(
                    "heartbeat from an amphora whose load balancer is DELETED: not healthy, "
                    "nothing written (R27)",
                    kind=e.kind,
                    amphora_id=e.amphora_id,
                    lb_id=e.lb_id,
                    **e.detail,
                )
            elif e.kind == "late":
                self.verdicts.say(
                    "heartbeat processed too late; no status and no health written",
                    kind=e.kind,
                    amphora_id=e.amphora_id,
                    lb_id=e.lb_id,
                    **e.detail,
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
        if self.restarts:
            self.metrics.count_octavia_restarts(self.restarts)
            self.restarts = 0
        self.restart_log.flush()
        for lag in self.lags:
            self.metrics.observe_processing_lag(lag)
        self.lags.clear()
        self.metrics.set_tracked(self.view.tracked())

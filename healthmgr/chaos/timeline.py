"""What a scenario looked like over time: sampled figures, events, and a PNG of them.

A :class:`Sampler` thread reads, every ``period`` seconds, the database (how
many of the scenario's amphorae are silent and stale, how many failover
requests they have, whether a breaker is open or a manager impaired) and the
managers (accepted heartbeats, resident memory), next to the heartbeats the
fleet sent. :func:`plot` draws the timelines of one or more scenarios with
matplotlib (the ``chaos`` extra: ``pip install healthmgr[chaos]``).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from healthmgr.chaos.deployment import Deployment, metric_sum
from healthmgr.chaos.topology import chunks
from healthmgr.db import models
from healthmgr.db.dbtime import utcnow

_health = models.AmphoraHealth
_requests = models.FailoverRequest
_managers = models.ManagerRecord


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the scenario started
    sent: int  # heartbeat datagrams the fleet (or the agents) sent so far
    accepted: float | None  # heartbeats accepted by all managers so far (metrics)
    silent: int  # amphorae of the scenario silent for 2 x heartbeat_interval
    stale: int  # ... for heartbeat_timeout
    failovers: int  # failover requests for the scenario's amphorae so far
    breaker_open: int  # managers whose circuit breaker is open
    impaired: int  # managers impaired
    rss_mib: float | None  # the largest manager's resident memory
    wall: dt.datetime | None = None  # UTC, naive (as the database's columns)


@dataclass
class Timeline:
    scenario: str
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "events": [[round(t, 3), e] for t, e in self.events],
            "samples": [{k: v for k, v in asdict(s).items() if k != "wall"} for s in self.samples],
        }

    def max(self, name: str, since: float = 0.0, until: float = float("inf")) -> float:
        values = [getattr(s, name) for s in self.samples if since <= s.t <= until]
        values = [v for v in values if v is not None]
        return max(values) if values else 0.0


class Sampler:
    """Samples a scenario's figures in a thread until :meth:`stop`."""

    def __init__(
        self,
        deployment: Deployment,
        amphorae: Callable[[], Sequence[str]],
        sent: Callable[[], int],
        timeline: Timeline,
        *,
        period: float = 0.25,
    ) -> None:
        self.deployment = deployment
        self.amphorae = amphorae
        self.sent = sent
        self.timeline = timeline
        self.period = period
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)
        self.errors = 0
        self.peak_rss: dict[str, int] = {}  # per manager, since the last clear()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, label: str) -> float:
        at = self.now()
        self.timeline.events.append((at, label))
        return at

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.timeline.samples.append(self.sample())
            except sa.exc.SQLAlchemyError:
                self.errors += 1  # the database is cut off on purpose, at times
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

    def sample(self) -> Sample:
        d = self.deployment
        t = d.timing
        ids = list(self.amphorae())
        now = utcnow()
        silent_cut = now - dt.timedelta(seconds=2 * t.heartbeat_interval)
        stale_cut = now - dt.timedelta(seconds=t.heartbeat_timeout)
        silent = stale = failovers = 0
        with d.engine.connect() as conn:
            for chunk in chunks(ids):
                for (last,) in conn.execute(
                    sa.select(_health.c.last_update).where(_health.c.amphora_id.in_(chunk))
                ):
                    silent += last < silent_cut
                    stale += last < stale_cut
                failovers += conn.execute(
                    sa.select(sa.func.count())
                    .select_from(_requests)
                    .where(_requests.c.amphora_id.in_(chunk))
                ).scalar_one()
            fresh = now - dt.timedelta(seconds=5)
            rows = conn.execute(
                sa.select(_managers.c.breaker_open, _managers.c.impaired)
                .where(_managers.c.heartbeat_at >= fresh)
                .where(_managers.c.stopped_at.is_(None))
            ).all()
        accepted: float | None = None
        rss: list[int] = []
        for m in d.managers:
            if not m.running:
                continue
            samples = m.metrics()
            if samples is not None:
                got = metric_sum(samples, "healthmgr_heartbeats_total", result="accepted")
                accepted = (accepted or 0.0) + got
            r = m.rss_bytes()
            if r is not None:
                rss.append(r)
                self.peak_rss[m.name] = max(r, self.peak_rss.get(m.name, 0))
        return Sample(
            round(self.now(), 3),
            self.sent(),
            accepted,
            silent,
            stale,
            failovers,
            sum(1 for r in rows if r.breaker_open),
            sum(1 for r in rows if r.impaired),
            round(max(rss) / 2**20, 1) if rss else None,
            now,
        )


# -- the picture ------------------------------------------------------------------------


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def plot(timelines: Sequence[Timeline], path: Path) -> Path:
    """One row per scenario: heartbeats per second, silent and stale amphorae, failovers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(
            "the PNG timeline needs matplotlib: pip install 'healthmgr[chaos]'"
        ) from e
    rows = max(1, len(timelines))
    fig, axes = plt.subplots(rows, 3, figsize=(15, 2.6 * rows), squeeze=False)
    for row, tl in zip(axes, timelines, strict=False):
        _plot_row(row, tl)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _rate(ts: list[float], values: list[float | None]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i in range(1, len(ts)):
        a, b = values[i - 1], values[i]
        if a is None or b is None or ts[i] <= ts[i - 1]:
            continue
        xs.append(ts[i])
        ys.append(max(0.0, (b - a) / (ts[i] - ts[i - 1])))
    return xs, ys


def _plot_row(row: Any, tl: Timeline) -> None:
    ts = [s.t for s in tl.samples]
    beats, health, fails = row
    beats.plot(*_rate(ts, [float(s.sent) for s in tl.samples]), label="sent")
    beats.plot(*_rate(ts, [s.accepted for s in tl.samples]), label="accepted")
    beats.set_title(f"{tl.scenario}: heartbeats per second", fontsize=9)
    health.plot(ts, [s.silent for s in tl.samples], label="silent", color="tab:orange")
    health.plot(ts, [s.stale for s in tl.samples], label="stale", color="tab:red")
    opened = [s.t for s in tl.samples if s.breaker_open]
    if opened:
        health.scatter(opened, [0] * len(opened), marker="|", color="black", label="breaker open")
    health.set_title("silent and stale amphorae", fontsize=9)
    fails.step(
        ts,
        [s.failovers for s in tl.samples],
        where="post",
        color="tab:purple",
        label="failover requests",
    )
    fails.set_title("failover requests (cumulative)", fontsize=9)
    for ax in row:
        for at, _ in tl.events:
            ax.axvline(at, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
    for at, label in tl.events:
        health.annotate(
            label,
            (at, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=6,
            va="top",
            ha="right",
            color="grey",
        )

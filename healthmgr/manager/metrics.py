"""Prometheus metrics, and a trio HTTP endpoint that serves them.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (tests and several
managers in one process do not collide). The per-heartbeat series (datagrams,
heartbeats by result, processing and commit lag) are plain-integer collectors
updated without locks: prometheus-client's own types take a lock per update,
which costs about 1.5 us per heartbeat, a few percent of a core at the target
rate. They must be updated from the trio thread only (never from a
``trio.to_thread`` worker); the HTTP endpoint reads them from the same thread.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus

import h11
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from healthmgr import __version__
from healthmgr.wire.addresses import split_host_port
from healthmgr.wire.errors import Reason

NAMESPACE = "healthmgr"

# Beyond the decoder's reasons: outcomes decided after a datagram was verified.
HEARTBEAT_RESULTS: tuple[str, ...] = (
    "accepted",
    *(reason.value for reason in Reason),
    "unknown_amphora",  # verified, but no such amphora in the database
    "late",  # processed later than heartbeat_interval after arrival: not a proof of life
    "unhealthy",  # applied, but the listener count differs from the database: no refresh
    "superseded",  # waited for its topology and was replaced by a newer heartbeat
)
FAILOVER_OUTCOMES: tuple[str, ...] = (
    "requested",
    "handed_off",
    "succeeded",
    "failed",
    "retried",
    "abandoned",
    "stopped_by_breaker",
    "taken_over",
)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 10, 100, 1000, 2500, 5000, 10000, 25000, 50000, 100000)


class FastCounter(Collector):
    """A labelled counter over a plain dict: trio thread only, no lock."""

    def __init__(self, name: str, doc: str, label: str, values: Iterable[str] = ()) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.values: dict[str, float] = dict.fromkeys(values, 0)

    def inc(self, value: str = "", amount: float = 1) -> None:
        self.values[value] = self.values.get(value, 0) + amount

    def get(self, value: str = "") -> float:
        return self.values.get(value, 0)

    def collect(self) -> Iterator[Metric]:
        labels = [self.label] if self.label else []
        family = CounterMetricFamily(self.name, self.doc, labels=labels)
        for value, count in self.values.items():
            family.add_metric([value] if self.label else [], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, labels=[self.label] if self.label else [])


class FastHistogram(Collector):
    """A histogram over plain lists: trio thread only, no lock; ~0.2 us per observation."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self.bounds, self.counts
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        self.sum += total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def collect(self) -> Iterator[Metric]:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((_bucket_label(bound), running))
        family = HistogramMetricFamily(self.name, self.doc)
        family.add_metric([], cumulative, sum_value=self.sum)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc)


class _ReadCounter(Collector):
    """A counter whose value is read from its source at collection time."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.read: Callable[[], int] = lambda: 0
        self.last = 0

    def collect(self) -> Iterator[Metric]:
        with contextlib.suppress(OSError):  # socket closed at shutdown: the last value
            self.last = self.read()
        family = CounterMetricFamily(self.name, self.doc)
        family.add_metric([], self.last)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc)


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """All of the manager's series, in a registry of their own."""

    def __init__(self, *, manager_id: str = "", process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        ns = NAMESPACE

        # Hot path (per datagram / heartbeat): lock-free collectors.
        self.datagrams_received = FastCounter(
            f"{ns}_datagrams_received", "UDP datagrams read from the socket.", ""
        )
        self.datagrams_received.values[""] = 0
        self.heartbeats = FastCounter(
            f"{ns}_heartbeats",
            "Heartbeats by result: accepted, or why it was not.",
            "result",
            HEARTBEAT_RESULTS,
        )
        self.processing_lag = FastHistogram(
            f"{ns}_processing_lag_seconds",
            "Time from datagram arrival to its heartbeat applied to the in-memory view.",
            LAG_BUCKETS,
        )
        self.commit_lag = FastHistogram(
            f"{ns}_commit_lag_seconds",
            "Time from datagram arrival to the database commit that reflects it.",
            LAG_BUCKETS,
        )
        for collector in (
            self.datagrams_received,
            self.heartbeats,
            self.processing_lag,
            self.commit_lag,
        ):
            reg.register(collector)

        # Per flush / per health check: prometheus-client's own types.
        self.flush_duration = Histogram(
            "flush_duration_seconds",
            "Duration of one writer flush (one transaction).",
            namespace=ns,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.flush_batch_size = Histogram(
            "flush_batch_size",
            "Rows written by one flush: amphora_health refreshes, status changes and "
            "statistics updates.",
            namespace=ns,
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.flush_failures = Counter(
            "flush_failures",
            "Flushes that failed (the pending state is kept).",
            namespace=ns,
            registry=reg,
        )
        self.stale_amphorae = Gauge(
            "stale_amphorae",
            "Amphorae whose last heartbeat is older than heartbeat_timeout.",
            namespace=ns,
            registry=reg,
        )
        self.tracked_amphorae = Gauge(
            "tracked_amphorae", "Amphorae in the in-memory view.", namespace=ns, registry=reg
        )
        self.circuit_breaker_open = Gauge(
            "circuit_breaker_open",
            "1 while failovers are stopped because stale amphorae reached failover_threshold.",
            namespace=ns,
            registry=reg,
        )
        self.failovers = Counter(
            "failovers", "Failovers by outcome.", ["outcome"], namespace=ns, registry=reg
        )
        for outcome in FAILOVER_OUTCOMES:
            self.failovers.labels(outcome)
        self.topology_refreshes = Counter(
            "topology_refreshes",
            "Topology cache refreshes from the database.",
            namespace=ns,
            registry=reg,
        )
        self.rows_rejected = Counter(
            "rows_rejected",
            "Rows the database refused or that could not be read (quarantined; the rest "
            "of their batch landed), by table and reason.",
            ["table", "reason"],
            namespace=ns,
            registry=reg,
        )
        self.listener_count_mismatches = Counter(
            "listener_count_mismatches",
            "Heartbeats whose listener count differs from the enabled listeners in the "
            "database (amphora_health not refreshed: that amphora heads for a failover).",
            namespace=ns,
            registry=reg,
        )
        self.impaired = Gauge(
            "impaired",
            "1 while this manager cannot see (database failing or stalled, kernel drops, "
            "event-loop lag): it makes no failover verdict then, nor for a grace period after.",
            namespace=ns,
            registry=reg,
        )
        self.impairments = Counter(
            "impairments",
            "Times this manager became impaired, by reason.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.database_reachable = Gauge(
            "database_reachable",
            "1 while the last database write (flush or liveness) succeeded.",
            namespace=ns,
            registry=reg,
        )
        self.seconds_since_last_commit = Gauge(
            "seconds_since_last_commit",
            "Seconds since this manager last committed to the database (flush or liveness).",
            namespace=ns,
            registry=reg,
        )
        self.failover_verdicts = Counter(
            "failover_verdicts",
            "Failover verdicts by verdict (failover, defer, stop) and reason; a verdict is "
            "counted when an amphora's verdict changes, not at every health check.",
            ["verdict", "reason"],
            namespace=ns,
            registry=reg,
        )
        self.silent_amphorae = Gauge(
            "silent_amphorae",
            "Amphorae that missed heartbeats (they count toward failover_threshold).",
            namespace=ns,
            registry=reg,
        )
        self.peer_managers = Gauge(
            "peer_managers",
            "Managers sharing the database as this one sees them, by state.",
            ["state"],
            namespace=ns,
            registry=reg,
        )
        for state in ("live", "impaired", "stale"):
            self.peer_managers.labels(state)
        self.octavia_agent_restarts = Counter(
            "octavia_agent_restarts",
            "Octavia-format heartbeats taken as an agent restart (sequence back at or "
            "below the highest): a real restart, or a replay of a captured heartbeat.",
            namespace=ns,
            registry=reg,
        )
        self.kernel_drops = _ReadCounter(
            f"{ns}_kernel_drops",
            "Datagrams the kernel dropped at the manager's UDP socket (receive buffer full).",
        )
        reg.register(self.kernel_drops)
        self.build_info = Info(
            "build", "healthmgr version and manager id.", namespace=ns, registry=reg
        )
        self.build_info.info({"version": __version__, "manager_id": manager_id})
        if process:
            ProcessCollector(registry=reg)  # resident memory, CPU, open fds

    # -- the hot path ------------------------------------------------------

    def count_datagrams(self, n: int = 1) -> None:
        self.datagrams_received.values[""] += n

    def count_heartbeat(self, result: str, n: int = 1) -> None:
        """``result``: "accepted", a ``Reason`` value, or another HEARTBEAT_RESULTS entry."""
        self.heartbeats.inc(str(result), n)

    def observe_processing_lag(self, seconds: float) -> None:
        self.processing_lag.observe(seconds)

    def observe_commit_lags(self, seconds: Iterable[float]) -> None:
        self.commit_lag.observe_many(seconds)

    # -- everything else ---------------------------------------------------

    def observe_flush(self, duration: float, batch_size: int) -> None:
        self.flush_duration.observe(duration)
        self.flush_batch_size.observe(batch_size)

    def count_flush_failure(self) -> None:
        self.flush_failures.inc()

    def count_failover(self, outcome: str, n: int = 1) -> None:
        self.failovers.labels(outcome).inc(n)

    def count_rejected_row(self, table: str, reason: str) -> None:
        self.rows_rejected.labels(table, reason).inc()

    def set_impaired(self, impaired: bool, started: Iterable[str] = ()) -> None:
        self.impaired.set(1 if impaired else 0)
        for reason in started:
            self.impairments.labels(reason).inc()

    def count_verdict(self, verdict: str, reason: str) -> None:
        self.failover_verdicts.labels(verdict, reason).inc()

    def count_listener_mismatch(self, n: int = 1) -> None:
        self.listener_count_mismatches.inc(n)

    def count_topology_refresh(self, n: int = 1) -> None:
        self.topology_refreshes.inc(n)

    def set_stale(self, count: int) -> None:
        self.stale_amphorae.set(count)

    def set_tracked(self, count: int) -> None:
        self.tracked_amphorae.set(count)

    def count_octavia_restarts(self, n: int = 1) -> None:
        self.octavia_agent_restarts.inc(n)

    def watch_kernel_drops(self, read: Callable[[], int]) -> None:
        """Read the socket's cumulative drop count at each scrape."""
        self.kernel_drops.read = read

    def set_breaker(self, is_open: bool) -> None:
        self.circuit_breaker_open.set(1 if is_open else 0)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) in the format the ``Accept`` header asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample's current value (tests and the CLI), e.g. ``healthmgr_heartbeats_total``."""
        return self.registry.get_sample_value(name, labels or {})


# -- HTTP endpoint ----------------------------------------------------------

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 10.0
LINGER_SECONDS = 1.0
MAX_LINGER_BYTES = 1 << 20


class MetricsBindError(OSError):
    """The metrics endpoint cannot listen on its address (in use, not local, ...)."""


async def serve_metrics(
    bind: str,
    metrics: Metrics,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``bind`` ("host:port", port 0 = any) until cancelled.

    ``task_status.started`` receives the bound port. One task per connection in
    trio's own nursery; no threads. HTTP is h11's; one request per connection.
    A misbehaving client only loses its connection.
    """
    host, port = split_host_port(bind, allow_zero_port=True)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise MetricsBindError(
            f"cannot bind the metrics endpoint ([metrics] bind = {bind}): {exc.strerror or exc}"
        ) from exc
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handler(stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await _handle(stream, metrics)
                await _linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away; nothing to do

    await trio.serve_listeners(handler, listeners)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then read what the client still sends, so closing does not reset the
    connection and destroy the response before the client has read it."""
    await stream.send_eof()
    with trio.move_on_after(LINGER_SECONDS):
        received = 0
        while received < MAX_LINGER_BYTES and (chunk := await stream.receive_some(65536)):
            received += len(chunk)


async def _handle(stream: trio.SocketStream, metrics: Metrics) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        request = await _next_request(stream, conn)
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        body = b"request head too large\n" if status == 431 else b"bad request\n"
        await _respond(stream, conn, status, body)
        return
    if request is None:
        return  # closed or timed out before a whole request head
    method = request.method.decode("ascii", "replace").upper()
    path = request.target.split(b"?", 1)[0]
    accept = ", ".join(v.decode("latin-1") for k, v in request.headers if k == b"accept")
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        await _respond(stream, conn, 405, b"only GET\n", extra=[("Allow", "GET, HEAD")])
    elif path == b"/metrics":
        body, content_type = metrics.render(accept)
        await _respond(stream, conn, 200, body, content_type, head_only=head_only)
    elif path == b"/":
        await _respond(stream, conn, 200, b"healthmgr: metrics at /metrics\n", head_only=head_only)
    else:
        await _respond(stream, conn, 404, b"not found; metrics are at /metrics\n")


async def _next_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    """The request head, or None if the client closed or was too slow to send it."""
    with trio.move_on_after(REQUEST_TIMEOUT):
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return event
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(4096))
            elif isinstance(event, h11.ConnectionClosed):
                return None
    return None


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    head_only: bool = False,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(extra or []),
    ]
    reason = HTTPStatus(status).phrase
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
    if not head_only:
        data += conn.send(h11.Data(data=body))
    # HEAD: Content-Length announces the GET body, none follows (h11 knows the method).
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)

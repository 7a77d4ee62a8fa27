"""Metrics: series pre-created at 0, scraped over a real TCP socket from the trio endpoint.

The endpoint speaks h11's HTTP/1.1 (an HTTP/1.0 request gets an HTTP/1.1 status
line, as RFC 9110 allows), one request per connection.
"""

from __future__ import annotations

import trio

from healthmgr.manager.metrics import FAILOVER_OUTCOMES, HEARTBEAT_RESULTS, Metrics, serve_metrics
from healthmgr.wire.errors import Reason


async def http(port: int, request: bytes) -> tuple[str, dict[str, str], str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return status, headers, body.decode()


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_label_values_exist_at_zero() -> None:
    metrics = Metrics(manager_id="hm-1")
    for result in ("accepted", "unknown_amphora", "late", "unhealthy", "superseded", *Reason):
        assert metrics.value("healthmgr_heartbeats_total", {"result": str(result)}) == 0
    assert set(HEARTBEAT_RESULTS) >= {r.value for r in Reason}
    for outcome in FAILOVER_OUTCOMES:
        assert metrics.value("healthmgr_failovers_total", {"outcome": outcome}) == 0
    assert metrics.value("healthmgr_circuit_breaker_open") == 0
    assert metrics.value("healthmgr_flush_failures_total") == 0
    assert metrics.value("healthmgr_octavia_agent_restarts_total") == 0
    assert metrics.value("healthmgr_kernel_drops_total") == 0
    assert metrics.value("healthmgr_build_info", {"version": "0.1.0", "manager_id": "hm-1"}) == 1


def test_updates() -> None:
    metrics = Metrics(process=False)
    metrics.count_datagrams(10)
    metrics.count_heartbeat("accepted", 7)
    metrics.count_heartbeat(Reason.BAD_SIGNATURE)
    metrics.observe_processing_lag(0.003)
    metrics.observe_processing_lag(0.005)  # on a bucket bound: counted in le="0.005"
    metrics.observe_commit_lags([0.2, 0.4, 40.0])
    metrics.observe_flush(0.02, 300)
    metrics.count_flush_failure()
    metrics.count_failover("retried", 2)
    metrics.count_topology_refresh()
    metrics.set_stale(4)
    metrics.set_tracked(1000)
    metrics.set_breaker(True)
    v = metrics.value
    assert v("healthmgr_datagrams_received_total") == 10
    assert v("healthmgr_heartbeats_total", {"result": "accepted"}) == 7
    assert v("healthmgr_heartbeats_total", {"result": "bad_signature"}) == 1
    assert v("healthmgr_processing_lag_seconds_bucket", {"le": "0.0025"}) == 0
    assert v("healthmgr_processing_lag_seconds_bucket", {"le": "0.005"}) == 2
    assert v("healthmgr_processing_lag_seconds_count") == 2
    assert v("healthmgr_commit_lag_seconds_bucket", {"le": "0.25"}) == 1
    assert v("healthmgr_commit_lag_seconds_bucket", {"le": "30.0"}) == 2
    assert v("healthmgr_commit_lag_seconds_bucket", {"le": "+Inf"}) == 3
    assert abs(v("healthmgr_commit_lag_seconds_sum") - 40.6) < 1e-9
    assert v("healthmgr_flush_duration_seconds_count") == 1
    assert v("healthmgr_flush_batch_size_sum") == 300
    assert v("healthmgr_flush_failures_total") == 1
    assert v("healthmgr_failovers_total", {"outcome": "retried"}) == 2
    assert v("healthmgr_topology_refreshes_total") == 1
    assert (v("healthmgr_stale_amphorae"), v("healthmgr_tracked_amphorae")) == (4, 1000)
    assert v("healthmgr_circuit_breaker_open") == 1


def test_registries_are_separate() -> None:
    a, b = Metrics(process=False), Metrics(process=False)
    a.count_heartbeat("accepted")
    assert b.value("healthmgr_heartbeats_total", {"result": "accepted"}) == 0


async def test_scrape_over_tcp() -> None:
    metrics = Metrics()
    metrics.count_heartbeat("accepted", 3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1:0", metrics)
        status, headers, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert int(headers["Content-Length"]) == len(body.encode())
        found = samples(body)
        assert found['healthmgr_heartbeats_total{result="accepted"}'] == 3
        assert found['healthmgr_heartbeats_total{result="replayed"}'] == 0
        assert found['healthmgr_failovers_total{outcome="stopped_by_breaker"}'] == 0
        assert found["process_resident_memory_bytes"] > 0

        status, headers, body = await http(
            port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith("# EOF")

        assert (await http(port, b"GET /nope HTTP/1.0\r\n\r\n"))[0].startswith("HTTP/1.1 404")
        assert (await http(port, b"POST /metrics HTTP/1.0\r\n\r\n"))[0].startswith("HTTP/1.1 405")
        assert (await http(port, b"garbage\r\n\r\n"))[0].startswith("HTTP/1.1 400")
        status, headers, _ = await http(port, b"PUT /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status.startswith("HTTP/1.1 405") and headers["Allow"] == "GET, HEAD"
        status, headers, body = await http(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and int(headers["Content-Length"]) > 0 and body == ""
        nursery.cancel_scope.cancel()


async def test_bad_clients_do_not_stop_the_endpoint() -> None:
    metrics = Metrics(process=False)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, "127.0.0.1:0", metrics)
        # A client that connects and leaves, and one that sends an endless header.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
        status, _, _ = await http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
        assert status.startswith("HTTP/1.1 431")
        status, _, body = await http(port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and "healthmgr_heartbeats_total" in body
        nursery.cancel_scope.cancel()


async def test_ipv6_bind() -> None:
    metrics = Metrics(process=False)
    async with trio.open_nursery() as nursery:
        try:
            port = await nursery.start(serve_metrics, "[::1]:0", metrics)
        except OSError:  # no IPv6 loopback in this sandbox
            nursery.cancel_scope.cancel()
            return
        stream = await trio.open_tcp_stream("::1", port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert (await stream.receive_some()).startswith(b"HTTP/1.1 200 OK")
        nursery.cancel_scope.cancel()

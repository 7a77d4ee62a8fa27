"""A partition that drops packets: the TCP timers of the product's connections end the wait.

The client runs in a network namespace (healthmgr/chaos/netns.py) and reaches the
server through a relay in this one; the test cuts the link between them.
Two cases, because the kernel bounds them differently:

* the query is sent after the cut: it stays unacknowledged, and
  ``tcp_user_timeout`` ends the retransmissions;
* the query was sent and acknowledged before the cut, and the client waits
  for a reply with nothing outstanding: no retransmission timer runs, and
  only a keepalive probe that goes unanswered ends it. libpq has no read
  timeout, so the first test proves the keepalive parameters alone (server
  statement timeout off, no client deadline).

``tests/bench/db_faults.py`` measures the same cases for every engine kind,
including the drivers' defaults, which stay blocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthmgr.chaos.netns import LinkedNamespace, NamespaceUnavailable, linked_namespace
from healthmgr.chaos.relay import Relay
from tests.conftest import unavailable
from tests.fault.conftest import server_address, through

T = 1.0  # [database] timeout
ROOT = Path(__file__).resolve().parents[2]
SLEEP = {"postgresql": "SELECT pg_sleep(30)", "mysql": "SELECT SLEEP(30)"}


@pytest.fixture
def namespace() -> Iterator[LinkedNamespace]:
    if os.geteuid() != 0:
        unavailable("network namespaces need root")
    try:
        with linked_namespace() as ns:
            yield ns
    except NamespaceUnavailable as e:
        unavailable(str(e))


class Client:
    """tests/fault/db_client.py in the namespace, through a relay listening on the host side."""

    def __init__(self, ns: LinkedNamespace, url: str, engine: str) -> None:
        self.ns = ns
        self.relay = Relay(server_address(url), listen=(ns.host_ip, 0)).start()
        argv = [
            sys.executable,
            "-m",
            "tests.fault.db_client",
            through(url, self.relay.address),
            "--timeout",
            str(T),
            "--engine",
            engine,
        ]
        self.proc = ns.popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._read() == {"ready": True}

    def _read(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the client process died"
        return json.loads(line)

    def send(self, sql: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()
        assert self._read() == {"sending": True}

    def result(self, limit: float) -> tuple[dict[str, object], float]:
        """The query's outcome and the seconds since ``start`` (fails past ``limit``)."""
        start = time.monotonic()
        try:
            out, _ = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the client still waits {limit:.0f} s after the cut: unbounded")
        return json.loads(out.splitlines()[0]), time.monotonic() - start

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.relay.close()


@pytest.fixture
def client_factory(namespace: LinkedNamespace) -> Iterator[type]:
    clients: list[Client] = []

    class Factory:
        @staticmethod
        def make(url: str, engine: str = "product") -> Client:
            clients.append(Client(namespace, url, engine))
            return clients[-1]

    yield Factory
    for c in clients:
        c.close()


def _check(out: dict[str, object], elapsed: float, what: str) -> None:
    print(
        f"\n{what}: {out.get('error_class')}/{out.get('reason')} {elapsed:.2f} s after the cut:"
        f" {out.get('error')}"
    )
    assert out["ok"] is False and out["error_class"] == "connection"


@pytest.mark.postgresql
def test_keepalives_alone_end_a_wait_for_a_reply(client_factory: type, pg_url: str) -> None:
    client = client_factory.make(pg_url, engine="keepalive")
    client.send(SLEEP["postgresql"])
    time.sleep(0.5)  # the query is acknowledged; the server sleeps
    client.ns.cut()
    out, elapsed = client.result(5 * T + 2)
    _check(out, elapsed, "postgresql keepalives, reply awaited")
    assert "timed out" in str(out["error"]).lower()  # ETIMEDOUT from the kernel


def test_unacknowledged_query_is_bounded(client_factory: type, server_db_url: str) -> None:
    client = client_factory.make(server_db_url)
    client.ns.cut()
    client.send("SELECT 1")
    out, elapsed = client.result(5 * T + 2)
    _check(out, elapsed, f"{server_db_url.split(':')[0]} product engine, query after the cut")


def test_awaited_reply_is_bounded(client_factory: type, server_db_url: str) -> None:
    dialect = "postgresql" if server_db_url.startswith("postgresql") else "mysql"
    client = client_factory.make(server_db_url)
    client.send(SLEEP[dialect])
    time.sleep(0.5)
    client.ns.cut()
    out, elapsed = client.result(5 * T + 2)
    _check(out, elapsed, f"{dialect} product engine, reply awaited")

"""A stand-in for Octavia's worker on RabbitMQ: a real oslo.messaging RPC server.

It listens where Octavia's ``octavia-worker`` listens (topic
``octavia_provisioning_v2``, an endpoint in namespace ``controller`` at
version 2.0) and records the ``failover_amphora`` casts it receives instead of
failing amphorae over (there is no Nova here to build a new one).

Each worker gets a virtual host of its own on the broker, made and removed
with ``rabbitmqctl``: RabbitMQ names a topic's queues by the topic alone, not
by the exchange, so two test runs on one broker (parallel sessions, xdist
workers) that only had exchanges of their own shared the queue
``octavia_provisioning_v2`` and received each other's casts, round robin.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import oslo_messaging as messaging
from oslo_config import cfg

from healthmgr.octavia.rpc import NAMESPACE, TOPIC, VERSION

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"


class Recorder:
    target = messaging.Target(namespace=NAMESPACE, version=VERSION)

    def __init__(self) -> None:
        self.casts: list[str] = []
        self.lock = threading.Lock()

    def failover_amphora(self, context: object, amphora_id: str) -> None:
        with self.lock:
            self.casts.append(amphora_id)


class Worker(NamedTuple):
    recorder: Recorder
    exchange: str
    url: str  # the transport URL, with the worker's own virtual host


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def own_vhost() -> Iterator[str]:
    """A fresh virtual host the guest user may use, removed afterwards; its transport URL."""
    vhost = f"healthmgr_test_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{RABBIT_URL}{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@contextmanager
def octavia_worker() -> Iterator[Worker]:
    """A real RPC server on a virtual host of its own, while it runs."""
    with own_vhost() as url:
        exchange = f"healthmgr_test_{uuid.uuid4().hex[:12]}"
        transport = messaging.get_rpc_transport(cfg.CONF, url=url)
        target = messaging.Target(topic=TOPIC, server="octavia-worker-test", exchange=exchange)
        recorder = Recorder()
        server = messaging.get_rpc_server(transport, target, [recorder])
        server.start()
        try:
            yield Worker(recorder, exchange, url)
        finally:
            server.stop()
            server.wait()
            transport.cleanup()

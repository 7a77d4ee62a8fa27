"""A stand-in for Octavia's worker on RabbitMQ: a real oslo.messaging RPC server.

It listens where Octavia's ``octavia-worker`` listens (topic
``octavia_provisioning_v2``, an endpoint in namespace ``controller`` at
version 2.0) and records the ``failover_amphora`` casts it receives instead of
failing amphorae over (there is no Nova here to build a new one). Each test
uses its own exchange so that runs on one broker do not see each other's casts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def octavia_worker() -> Iterator[tuple[Recorder, str]]:
    """(the recorder, its exchange) while a real RPC server runs."""
    exchange = f"healthmgr_test_{uuid.uuid4().hex[:12]}"
    transport = messaging.get_rpc_transport(cfg.CONF, url=RABBIT_URL)
    target = messaging.Target(topic=TOPIC, server="octavia-worker-test", exchange=exchange)
    recorder = Recorder()
    server = messaging.get_rpc_server(transport, target, [recorder])
    server.start()
    try:
        yield recorder, exchange
    finally:
        server.stop()
        server.wait()
        transport.cleanup()

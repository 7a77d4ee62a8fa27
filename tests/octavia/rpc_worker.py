"""A stand-in for Octavia's worker on RabbitMQ: a real oslo.messaging RPC server.

It listens where Octavia's ``octavia-worker`` listens (topic
``octavia_provisioning_v2``, an endpoint in namespace ``controller`` at
version 2.0) and records the ``failover_amphora`` casts it receives instead of
failing amphorae over (there is no Nova here to build a new one). Each test
uses its own exchange, but oslo.messaging names the worker's queue by topic
(``octavia_provisioning_v2``), so two workers on one broker share that queue and
take each other's casts: one worker at a time on this machine (a file lock, which
also holds between the parallel test processes of pytest-xdist).
"""

from __future__ import annotations

import fcntl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import oslo_messaging as messaging
from oslo_config import cfg

from healthmgr.octavia.rpc import NAMESPACE, TOPIC, VERSION

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
LOCK = Path(tempfile.gettempdir()) / "healthmgr-tests-octavia-worker.lock"


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
    """(the recorder, its exchange) while a real RPC server runs (the only one here)."""
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        with _running_worker() as found:
            yield found


@contextmanager
def _running_worker() -> Iterator[tuple[Recorder, str]]:
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

"""The ``octavia`` failover driver: Octavia's worker fails the amphora over.

What Octavia's API does for ``PUT /v2/octavia/amphorae/{id}/failover``, and
its health manager before a failover: the load balancer goes to
PENDING_UPDATE by Octavia's test-and-set (an immutable load balancer, one in
a PENDING_* state, is skipped: the claim is given back), then the RPC cast
``failover_amphora(amphora_id=...)`` goes to Octavia's worker on topic
``octavia_provisioning_v2``, namespace ``controller``, version 2.0, over the
deployment's ``transport_url``, with oslo.messaging (the library Octavia
uses; the ``octavia`` extra). The request stays PENDING: the worker owns the
failover from there (it replaces the amphora, or sets it and the load
balancer to ERROR).

Idempotent (docs/operations.md, "The driver contract"): the steps taken are
recorded per request (:mod:`healthmgr.db.octavia_failover`), so a retry or
a manager that takes the lease over continues where the first stopped; only
a cast whose recording was lost (the manager died between the two) is sent
again, and Octavia's worker copes with that as with two API calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from healthmgr.config import ConfigError
from healthmgr.db import octavia_failover as steps
from healthmgr.db.engine import make_engine
from healthmgr.manager.failover import DriverResult, FailoverFailed, FailoverJob

if TYPE_CHECKING:
    from healthmgr.config import Settings

TOPIC = "octavia_provisioning_v2"  # Octavia's constants.TOPIC_AMPHORA_V2
NAMESPACE = "controller"  # constants.RPC_NAMESPACE_CONTROLLER_AGENT
VERSION = "2.0"
METHOD = "failover_amphora"
CAST_RETRIES = 2  # connection retries of one cast (oslo.messaging's retry)


def _messaging() -> Any:
    try:
        import oslo_messaging
    except ImportError:
        raise ConfigError(
            ['failover.driver: "octavia" needs oslo.messaging: pip install "healthmgr[octavia]"']
        ) from None
    return oslo_messaging


class OctaviaDriver:
    name = "octavia"

    def __init__(self, settings: Settings) -> None:
        fo = settings.failover
        if not fo.transport_url:
            raise ConfigError(['failover.transport_url: required by driver = "octavia"'])
        if settings.database.schema == "healthmgr":
            raise ConfigError(
                [
                    'failover.driver: "octavia" fails over through Octavia\'s worker, which reads '
                    'Octavia\'s database: set [database] schema = "octavia"'
                ]
            )
        self.messaging = _messaging()
        self.transport_url = fo.transport_url
        self.exchange = fo.control_exchange
        self.timeout = fo.timeout
        self.engine = make_engine(settings.database.connection)
        self._transport: Any = None
        self._client: Any = None

    def client(self) -> Any:
        """The RPC client, built once (in a worker thread: it may connect)."""
        if self._client is None:
            messaging = self.messaging
            from oslo_config import cfg

            # oslo.messaging registers some of its options on the global CONF
            # only; nothing else in healthmgr uses it.
            self._transport = messaging.get_rpc_transport(cfg.CONF, url=self.transport_url)
            target = messaging.Target(
                exchange=self.exchange, topic=TOPIC, namespace=NAMESPACE, version=VERSION
            )
            self._client = messaging.get_rpc_client(self._transport, target, retry=CAST_RETRIES)
        return self._client

    def close(self) -> None:
        """The broker connections and the database pool (a reload or the shutdown)."""
        if self._transport is not None:
            self._transport.cleanup()
            self._transport = self._client = None
        self.engine.dispose()

    async def run(self, job: FailoverJob) -> DriverResult:
        with trio.move_on_after(self.timeout):
            return await trio.to_thread.run_sync(self._run, job, abandon_on_cancel=True)
        raise FailoverFailed(
            f"Octavia failover of {job.amphora_id} timed out after {self.timeout:g}s"
        )

    def _run(self, job: FailoverJob) -> DriverResult:
        with self.engine.begin() as conn:
            lock = steps.lock_load_balancer(
                conn, job.request_id, job.amphora_id, job.load_balancer_id
            )
        if lock is steps.Lock.IMMUTABLE:
            return DriverResult.SKIPPED
        if lock is steps.Lock.CAST:
            return DriverResult.HANDED_OFF
        try:
            self.client().cast({}, METHOD, amphora_id=job.amphora_id)
        except Exception as exc:
            raise FailoverFailed(f"cannot cast {METHOD} to Octavia's worker: {exc}") from exc
        with self.engine.begin() as conn:
            steps.mark_cast(conn, job.request_id)
        return DriverResult.HANDED_OFF

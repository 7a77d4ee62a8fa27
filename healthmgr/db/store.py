"""The manager's data layer: batch reads, one-transaction flushes, claims.

Synchronous on purpose: the daemon calls every method through
``trio.to_thread.run_sync`` (SQLAlchemy's asyncio layer does not run under
trio). Each public method is one transaction; write transactions are retried
a few times on deadlock, serialization and lock-timeout errors (Galera
certifies row locks only at commit, so a claim or a flush can fail there
with a deadlock error although it did nothing wrong), never assumed done.

Transactions that write use ``BEGIN IMMEDIATE`` on SQLite (with
:func:`healthmgr.db.engine.make_engine`) so that a writer queues behind
another on the busy timeout instead of failing on a stale snapshot, and
READ COMMITTED on MariaDB/MySQL (no gap locks between managers' upserts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import sqlalchemy as sa
import tenacity
from sqlalchemy import exc

from healthmgr.db import claims as _claims
from healthmgr.db import managers as _managers
from healthmgr.db import topology_queries as _topo
from healthmgr.db.claims import Claim
from healthmgr.db.engine import make_engine
from healthmgr.db.errors import diagnose, is_transient
from healthmgr.db.flush import Flusher, FlushStats
from healthmgr.db.octavia_schema import NATIVE
from healthmgr.rules.batch import FlushBatch, RefusedRow
from healthmgr.rules.topology import AmphoraTopology, LoadBalancerTopology
from healthmgr.wire.ids import Id, id_str

if TYPE_CHECKING:
    from healthmgr.config import Settings

__all__ = ["Claim", "FlushStats", "Store", "TopologyLoad"]


class TopologyLoad(NamedTuple):
    found: dict[Id, AmphoraTopology]
    refused: tuple[RefusedRow, ...]


T = TypeVar("T")

RETRIES = 4
# Errors after which the whole transaction can simply run again at once: a
# deadlock or serialization failure (Galera reports a lost certification as a
# deadlock). A lock or statement timeout is not retried here: the wait was
# bounded on purpose, and the caller decides (the manager is impaired).
_PG_RETRY = {"40001", "40P01"}
_MYSQL_RETRY = {1213, 1020}


def is_retryable(error: BaseException) -> bool:
    """A deadlock or serialization failure: run the transaction again."""
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_RETRY


class Store:
    """Batch reads, batched writes and failover claims over one engine."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        retries: int = RETRIES,
        manager_id: str = "healthmgr",
        schema: str = NATIVE,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql", "mysql"):
            raise ValueError(f"unsupported database dialect {self.dialect!r}")
        self.retries = retries
        self.manager_id = manager_id
        self.schema = schema  # "healthmgr" (native) or "octavia" (Octavia's database)
        self._flusher = Flusher(self.dialect, manager_id, schema)

    # --- transactions -----------------------------------------------------

    def _transaction(self, work: Callable[[sa.Connection], T], *, write: bool) -> tuple[T, int]:
        """Run ``work`` in one transaction; retry it on transient lock errors."""
        options: dict[str, Any] = {}
        if write and self.dialect == "sqlite":
            options["sqlite_begin"] = "IMMEDIATE"
        if write and self.dialect == "mysql":
            options["isolation_level"] = "READ COMMITTED"
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            retry=tenacity.retry_if_exception(is_retryable),
            # Jittered backoff so that two managers do not collide again.
            wait=tenacity.wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )

        def once() -> T:
            with self.engine.connect() as conn:
                if options:
                    conn.execution_options(**options)
                with conn.begin():
                    return work(conn)

        return retrying(once), retrying.statistics["attempt_number"]

    # --- topology ---------------------------------------------------------

    def load_topologies(self, amphora_ids: Collection[Id]) -> TopologyLoad:
        """Topologies of these amphorae; unknown or DELETED ones are absent.

        Four queries per 1,000 amphorae, whatever their topology: amphorae
        with their load balancers, then listeners, pools and members. Rows that
        cannot be read are left out and listed in ``refused``; when the
        database refuses a query for its data, the ids are bisected so that
        only the amphorae it concerns are left out. Raises only transient
        errors (connection, locks).
        """
        if not amphora_ids:
            return TopologyLoad({}, ())
        return self._load_isolated(sorted(set(amphora_ids)))

    def _load_isolated(self, ids: list[Id]) -> TopologyLoad:
        refusals = _topo.Refusals()
        try:
            found, _ = self._transaction(
                lambda conn: _topo.load_amphorae(conn, ids, refusals), write=False
            )
        except exc.DBAPIError as error:
            if is_transient(error):
                raise
            if len(ids) == 1:
                amp = id_str(ids[0])
                detail = " ".join(str(error.orig).split())[:200]
                row = RefusedRow("amphora", amp, amp, diagnose(error).reason, detail)
                return TopologyLoad({}, (row,))
            mid = len(ids) // 2
            first, second = self._load_isolated(ids[:mid]), self._load_isolated(ids[mid:])
            return TopologyLoad({**first.found, **second.found}, first.refused + second.refused)
        return TopologyLoad(found, tuple(refusals.rows))

    def load_load_balancer(self, lb_id: Id) -> LoadBalancerTopology | None:
        """One load balancer's topology (None if unknown or DELETED)."""
        found, _ = self._transaction(
            lambda conn: _topo.load_load_balancers(conn, [id_str(lb_id)]), write=False
        )
        return found.get(id_str(lb_id))

    def load_amphorae_of(self, lb_id: Id) -> dict[Id, AmphoraTopology]:
        """The live amphorae of one load balancer, with its topology."""
        ids, _ = self._transaction(lambda conn: _topo.amphora_ids_of(conn, lb_id), write=False)
        return self.load_topologies(ids).found

    # --- flush ------------------------------------------------------------

    def flush(self, batch: FlushBatch) -> FlushStats:
        """Write one batch (see :mod:`healthmgr.db.flush`): one transaction, or
        more when refused rows must be isolated; they come back in
        ``FlushStats.refused``, never as an exception. Raises only transient
        errors (connection, locks), after which the caller keeps the batch."""
        return self._flusher.flush(batch, lambda work: self._transaction(work, write=True))

    # --- failure detection and failover ----------------------------------

    def read_for_check(
        self, suspect_cutoff: dt.datetime, window_start: dt.datetime, limit: int
    ) -> _claims.CheckRead:
        """What one health check needs: silent amphorae (with their last
        observer), the breaker's counts, and every manager's liveness."""
        found, _ = self._transaction(
            lambda conn: _claims.read_for_check(conn, suspect_cutoff, window_start, limit),
            write=False,
        )
        return found

    def stop(self, ids: Collection[str], cutoff: dt.datetime) -> list[str]:
        """Circuit breaker: still-stale ALLOCATED amphorae become FAILOVER_STOPPED."""
        found, _ = self._transaction(lambda conn: _claims.stop(conn, ids, cutoff), write=True)
        return found

    def claim(
        self,
        wanted: Mapping[str, str],
        cutoff: dt.datetime,
        manager: str,
        lease: float,
        limit: int | None = None,
    ) -> list[Claim]:
        """Claim at most ``limit`` of these amphorae (id -> reason) if still stale,
        exactly once across managers (see :func:`healthmgr.db.claims.claim`)."""
        found, _ = self._transaction(
            lambda conn: _claims.claim(conn, wanted, cutoff, manager, lease, limit), write=True
        )
        return found

    def take_over(
        self, manager: str, lease: float, limit: int, cutoff: dt.datetime
    ) -> _claims.TakeOver:
        """Requests whose lease expired become this manager's (see claims.take_over)."""
        found, _ = self._transaction(
            lambda conn: _claims.take_over(conn, manager, lease, limit, cutoff), write=True
        )
        return found

    def renew_leases(self, manager: str, request_ids: Collection[int], lease: float) -> None:
        self._transaction(lambda conn: _claims.renew(conn, manager, request_ids, lease), write=True)

    def record_progress(
        self, request_id: int, manager: str, attempts: int, error: str | None
    ) -> None:
        self._transaction(
            lambda conn: _claims.progress(conn, request_id, manager, attempts, error), write=True
        )

    def record_outcome(
        self, claim: Claim, manager: str, state: str, attempts: int, error: str | None = None
    ) -> bool:
        """Close a claim with a known outcome (False: another manager owns it now)."""
        found, _ = self._transaction(
            lambda conn: _claims.finish(conn, claim, manager, state, attempts, error), write=True
        )
        return found

    def release(self, amphora_id: Id) -> None:
        """``busy = False``: the amphora may be claimed again."""
        self._transaction(lambda conn: _claims.set_busy(conn, amphora_id, False), write=True)

    def write_presence(self, presence: _managers.Presence, *, first: bool = False) -> None:
        """This manager's liveness and health row (database clock)."""
        self._transaction(lambda conn: _managers.write(conn, presence, first=first), write=True)

    # --- fleet ------------------------------------------------------------

    def load_fleet(self) -> tuple[set[Id], set[Id]]:
        """(live amphora ids, those that have spoken native): the decoder's fleet."""
        from healthmgr.db.fleet_queries import load_fleet

        found, _ = self._transaction(load_fleet, write=False)
        return found


def open_store(settings: Settings, schema: str | None = None) -> Store:
    """The daemon's store, and its writer process's (same URL, bounds, id, schema)."""
    db = settings.database
    engine = make_engine(db.connection, timeout=db.timeout)
    if schema is None:
        from healthmgr.db.migrate import resolve_schema  # not in the writer: it is given one

        schema = resolve_schema(engine, db.schema)
    return Store(engine, manager_id=settings.health_manager.effective_manager_id, schema=schema)

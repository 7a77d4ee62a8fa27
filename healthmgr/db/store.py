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
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

from healthmgr import constants as C
from healthmgr.batch import FlushBatch
from healthmgr.db import claims as _claims
from healthmgr.db import topology_queries as _topo
from healthmgr.db import writes as _w
from healthmgr.db.claims import Claim
from healthmgr.db.models import Amphora, Base
from healthmgr.topology import AmphoraTopology, LoadBalancerTopology
from healthmgr.wire.values import Id, id_bytes, id_str

__all__ = ["Claim", "FlushStats", "Store"]

T = TypeVar("T")

# IN-list size for the FAILOVER_STOPPED check of a flush: one statement for
# 10,000 bumps, under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
RECOVER_CHUNK = 10_000
RETRIES = 4
_amp = Amphora.__table__

# Errors after which the whole transaction can simply run again.
_PG_RETRY = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_MYSQL_RETRY = {1205, 1213, 1020}  # lock wait timeout, deadlock (Galera), record changed
_SQLITE_RETRY = ("database is locked", "database table is locked")


@dataclass(frozen=True, slots=True)
class FlushStats:
    """What one flush did."""

    health_rows: int  # amphora_health rows upserted (one per amphora)
    status_rows: int  # status writes issued (after coalescing per object)
    stats_rows: int  # statistics updates applied or ignored as old (one per heartbeat/listener)
    statements: int  # SQL statements executed (an executemany counts once)
    recovered: tuple[Id, ...] = ()  # FAILOVER_STOPPED -> ALLOCATED
    rejected: tuple[str, ...] = ()  # items the database cannot take, and why (dropped)
    attempts: int = 1  # transaction attempts (>1 after a deadlock retry)
    seconds: float = 0.0


@dataclass
class _Counter:
    n: int = 0
    recovered: list[Id] = field(default_factory=list)

    def run(self, conn: sa.Connection, stmt: Any, params: Any = None) -> sa.CursorResult:
        self.n += 1
        return conn.execute(stmt, params) if params is not None else conn.execute(stmt)

    def driver(self, conn: sa.Connection, sql: str, params: Any) -> sa.CursorResult:
        """SQL text straight to the driver: a list of rows is one executemany."""
        self.n += 1
        return conn.exec_driver_sql(sql, params)


def is_retryable(error: BaseException) -> bool:
    """A deadlock, serialization failure or lock timeout: run the transaction again."""
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _PG_RETRY:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRY:
        return True
    return any(text in str(orig) for text in _SQLITE_RETRY)


class Store:
    """Batch reads, batched writes and failover claims over one engine."""

    def __init__(self, engine: sa.Engine, *, retries: int = RETRIES) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql", "mysql"):
            raise ValueError(f"unsupported database dialect {self.dialect!r}")
        self.retries = retries
        self._health_sql = _w.health_statement(self.dialect)
        self._stats_sql = _w.stats_statement(self.dialect, delta=False)
        self._delta_sql = _w.stats_statement(self.dialect, delta=True)
        # Built once: SQLAlchemy caches their compiled form.
        self._status_update = {
            t: _w.status_update(Base.metadata.tables[t]) for t in _w.STATUS_TABLE_ORDER
        }

    # --- transactions -----------------------------------------------------

    def _transaction(self, work: Callable[[sa.Connection], T], *, write: bool) -> tuple[T, int]:
        """Run ``work`` in one transaction; retry it on transient lock errors."""
        options: dict[str, Any] = {}
        if write and self.dialect == "sqlite":
            options["sqlite_begin"] = "IMMEDIATE"
        if write and self.dialect == "mysql":
            options["isolation_level"] = "READ COMMITTED"
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.engine.connect() as conn:
                    if options:
                        conn.execution_options(**options)
                    with conn.begin():
                        return work(conn), attempt
            except exc.DBAPIError as error:
                if attempt > self.retries or not is_retryable(error):
                    raise
                # Jittered backoff so that two managers do not collide again.
                time.sleep(random.uniform(0.005, 0.02) * 2**attempt)

    # --- topology ---------------------------------------------------------

    def load_topologies(self, amphora_ids: Collection[Id]) -> dict[Id, AmphoraTopology]:
        """Topologies of these amphorae; unknown or DELETED ones are absent.

        Four queries per 1,000 amphorae, whatever their topology: amphorae
        with their load balancers, then listeners, pools and members.
        """
        if not amphora_ids:
            return {}
        found, _ = self._transaction(
            lambda conn: _topo.load_amphorae(conn, amphora_ids), write=False
        )
        return found

    def load_load_balancer(self, lb_id: Id) -> LoadBalancerTopology | None:
        """One load balancer's topology (None if unknown or DELETED)."""
        found, _ = self._transaction(
            lambda conn: _topo.load_load_balancers(conn, [id_str(lb_id)]), write=False
        )
        return found.get(id_str(lb_id))

    def load_amphorae_of(self, lb_id: Id) -> dict[Id, AmphoraTopology]:
        """The live amphorae of one load balancer, with its topology."""

        def work(conn: sa.Connection) -> dict[Id, AmphoraTopology]:
            return _topo.load_amphorae(conn, _topo.amphora_ids_of(conn, lb_id))

        found, _ = self._transaction(work, write=False)
        return found

    # --- flush ------------------------------------------------------------

    def flush(self, batch: FlushBatch) -> FlushStats:
        """Write one batch in one transaction, with a handful of statements.

        Health bumps only move ``last_update`` forward and return bumped
        FAILOVER_STOPPED amphorae to ALLOCATED; status writes touch only
        ``operating_status`` and only when it differs; statistics are applied
        in ``seq`` order, conditioned on ``last_seq`` in the database. Items
        the database cannot take (unknown table or status, counter beyond
        BIGINT) are dropped and described in ``FlushStats.rejected``: one bad
        value must not wedge the writer, which retries failed flushes.
        """
        started = time.perf_counter()
        dialect = self.dialect
        statuses, stats, rejected = _w.valid_parts(batch.statuses, batch.stats)
        health_ids, health = _w.health_params(dialect, batch.health)
        status_groups = _w.status_groups(statuses)
        now = _utcnow()
        # (statement, driver parameters) per round of statistics, in seq order.
        absolute = [s for s in stats if not s.is_delta]
        deltas = [s for s in stats if s.is_delta]
        stats_work = [
            (statement, _w.stats_params(dialect, part, now))
            for statement, updates in ((self._stats_sql, absolute), (self._delta_sql, deltas))
            if updates
            for part in _w.stats_rounds(updates)
        ]

        def work(conn: sa.Connection) -> _Counter:
            counter = _Counter()
            if health_ids:
                counter.driver(conn, self._health_sql.sql, health)
                counter.recovered = self._recover(conn, counter, health_ids)
            for table, rows in status_groups:
                counter.run(conn, self._status_update[table], rows)
            for statement, params in stats_work:
                counter.driver(conn, statement.sql, params)
            return counter

        counter, attempts = self._transaction(work, write=True)
        return FlushStats(
            health_rows=len(health_ids),
            status_rows=sum(len(rows) for _, rows in status_groups),
            stats_rows=len(stats),
            statements=counter.n,
            recovered=tuple(counter.recovered),
            rejected=tuple(rejected),
            attempts=attempts,
            seconds=time.perf_counter() - started,
        )

    def _recover(self, conn: sa.Connection, counter: _Counter, ids: list[str]) -> list[Id]:
        """Bumped amphorae in FAILOVER_STOPPED go back to ALLOCATED."""
        stopped: list[str] = []
        where = f"status = '{C.FAILOVER_STOPPED}' AND id"
        if self.dialect == "postgresql":
            sql = f"SELECT id FROM amphora WHERE {where} = ANY(%(ids)s::varchar[])"
            stopped = [row[0] for row in counter.driver(conn, sql, {"ids": ids})]
        else:
            mark = "?" if self.dialect == "sqlite" else "%s"
            for part in _topo.chunks(ids, RECOVER_CHUNK):
                marks = ", ".join(mark for _ in part)
                sql = f"SELECT id FROM amphora WHERE {where} IN ({marks})"
                stopped += [row[0] for row in counter.driver(conn, sql, tuple(part))]
        if stopped:
            counter.run(
                conn,
                sa.update(_amp)
                .where(_amp.c.id.in_(stopped))
                .where(_amp.c.status == C.FAILOVER_STOPPED)
                .values(status=C.ALLOCATED, updated_at=_utcnow()),
            )
        return [id_bytes(i) for i in sorted(stopped)]

    # --- failure detection and failover ----------------------------------

    def count_stale(self, cutoff: dt.datetime) -> int:
        """Failover candidates: not busy, ``last_update < cutoff``, amphora
        ALLOCATED or FAILOVER_STOPPED, load balancer (if any) not PENDING_*."""
        found, _ = self._transaction(lambda conn: _claims.count_stale(conn, cutoff), write=False)
        return found

    def claim_stale(
        self, cutoff: dt.datetime, limit: int, manager: str, reason: str
    ) -> list[Claim]:
        """Claim up to ``limit`` candidates (oldest first), exactly once across
        managers: each becomes busy and gets a PENDING failover_request row
        (requested_by=manager, attempts 0) in the same transaction. Rows
        another manager holds locked are skipped, not waited for."""
        found, _ = self._transaction(
            lambda conn: _claims.claim_stale(conn, cutoff, limit, manager, reason), write=True
        )
        return found

    def stop_stale(self, cutoff: dt.datetime) -> list[Id]:
        """Circuit breaker: stale ALLOCATED candidates become FAILOVER_STOPPED
        (a later health bump returns them to ALLOCATED). Returns their ids."""
        found, _ = self._transaction(lambda conn: _claims.stop_stale(conn, cutoff), write=True)
        return found

    def update_failover_request(
        self, request_id: int, state: str, attempts: int, last_error: str | None = None
    ) -> None:
        """Record progress of a failover (LookupError if the row is missing)."""
        self._transaction(
            lambda conn: _claims.update_request(conn, request_id, state, attempts, last_error),
            write=True,
        )

    def finish_failover(self, claim: Claim, succeeded: bool) -> None:
        """Close a claim: request SUCCEEDED or FAILED (attempts and error as
        recorded by :meth:`update_failover_request`).

        ``busy`` stays True either way: after success the amphora is being
        replaced (with the ``record`` driver the API's worker owns it now and
        deletes its health row), after the last failed attempt it needs an
        operator (its load balancer goes ERROR, see :meth:`mark_lb_error`).
        Either way no manager must claim it again; :meth:`release` undoes that.
        """
        state = C.FAILOVER_SUCCEEDED if succeeded else C.FAILOVER_FAILED
        self._transaction(
            lambda conn: _claims.set_request_state(conn, claim.request_id, state), write=True
        )

    def abandon(self, claim: Claim, last_error: str | None = None) -> None:
        """Give a claim back (shutdown): request ABANDONED, amphora not busy,
        so any manager claims it again if it is still stale."""

        def work(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(_claims._req)
                .where(_claims._req.c.id == claim.request_id)
                .values(state=C.FAILOVER_ABANDONED, last_error=last_error, updated_at=_utcnow())
            )
            _claims.set_busy(conn, claim.amphora_id, False)

        self._transaction(work, write=True)

    def mark_lb_error(self, lb_id: Id) -> bool:
        """provisioning_status ERROR after the last failed attempt (as Octavia)."""
        found, _ = self._transaction(lambda conn: _claims.mark_lb_error(conn, lb_id), write=True)
        return found

    def release(self, amphora_id: Id) -> None:
        """``busy = False``: the amphora may be claimed again."""
        self._transaction(lambda conn: _claims.set_busy(conn, amphora_id, False), write=True)

    # --- fleet ------------------------------------------------------------

    def load_fleet(self) -> tuple[set[Id], set[Id]]:
        """(live amphora ids, those that have spoken native): the decoder's fleet."""
        from healthmgr.db.fleet_queries import load_fleet

        found, _ = self._transaction(load_fleet, write=False)
        return found


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)

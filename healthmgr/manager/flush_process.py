"""``[health_manager] writer = "process"``: the flush runs in a child process.

The receive loop and the flush's SQL share one GIL in a single process, which
bounds it near 24,000 seed heartbeats/s on SQLite (docs/performance.md). Here
the writer thread only encodes the batch (msgpack, about 0.5 µs per amphora)
and waits for the child, which decodes it and runs the same
:meth:`Store.flush <healthmgr.db.store.Store.flush>` over an engine of its own.

Failures keep the writer's classification (:mod:`healthmgr.manager.writer`):
a database error in the child comes back as :class:`FlushFailed` (transient:
the rows are kept and retried), anything else as :class:`FlushBug` (the batch
is dropped). A child that died, or did not answer within :func:`answer_bound`,
is a transient failure too: it is killed and a new one starts at the next
flush. Writes are idempotent (newest wins, statistics by sequence number), so
a batch the dead child may have committed can be written again.

The child ignores SIGTERM/SIGINT/SIGHUP (systemd signals the whole cgroup; the
parent's final flush still needs it) and exits when its parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, TypeVar

import msgspec
import structlog
from sqlalchemy.engine import make_url

from healthmgr.db.engine import Bounds
from healthmgr.db.errors import DATABASE_ERRORS, ErrorClass, diagnose
from healthmgr.db.store import RETRIES, open_store
from healthmgr.logging import one_line
from healthmgr.rules.batch import FlushBatch

if TYPE_CHECKING:
    from healthmgr.config import Settings
    from healthmgr.db.flush import FlushStats
    from healthmgr.db.store import Store

log = structlog.get_logger("healthmgr.writer")
T = TypeVar("T")

# Starting the child: a fresh interpreter importing the store (about a second).
START_S = 30.0
# How often the child checks that its parent is alive.
PARENT_POLL_S = 0.5
# Shutdown: the child finishes its call and exits; after this it is killed.
STOP_S = 5.0


class FlushFailed(Exception):
    """A transient failure of a flush in the child (its diagnosis) or of the child itself."""

    def __init__(self, message: str, kind: str, reason: str) -> None:
        super().__init__(message, kind, reason)  # all in args: pickles as is
        self.kind = kind
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


class FlushBug(Exception):
    """Anything else raised by the flush in the child: a bug, never retried."""


def answer_bound(timeout: float) -> float:
    """The longest wait for the child's answer: every attempt of the store's
    retries may wait for a pooled connection and then for a reply; plus a start."""
    bounds = Bounds(timeout)
    return (RETRIES + 1) * (bounds.timeout + bounds.reply_s) + START_S


class ProcessFlush:
    """``flush(batch) -> FlushStats``, run by one child process (see the module)."""

    def __init__(self, settings: Settings, schema: str) -> None:
        url = make_url(settings.database.connection)
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            raise ValueError('writer = "process" needs a database file: the child has its own')
        self._init_args = (settings, schema, os.getpid())
        self.bound = answer_bound(settings.database.timeout)
        self._pool: ProcessPoolExecutor | None = None
        self._encode = msgspec.msgpack.Encoder().encode

    def start(self) -> None:
        """Start the child now, not at the first flush; raise if it cannot start."""
        self._submit(_ping, START_S)

    def flush(self, batch: FlushBatch) -> FlushStats:
        return self._submit(_flush, self.bound, self._encode(batch))

    def _submit(self, fn: Callable[..., T], bound: float, *args: object) -> T:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # threads: no fork
                initializer=_start_child,
                initargs=self._init_args,
            )
        try:
            return self._pool.submit(fn, *args).result(timeout=bound)
        except BrokenProcessPool as exc:
            codes = self._discard()
            log.warning("writer process died; its rows are kept for a new one", exitcodes=codes)
            raise FlushFailed("writer process died", ErrorClass.CONNECTION, "writer_died") from exc
        except TimeoutError as exc:
            self._discard()
            log.warning("writer process did not answer; killed", after=bound)
            raise FlushFailed(
                f"writer process did not answer within {bound:.0f} s",
                ErrorClass.CONNECTION,
                "writer_timeout",
            ) from exc

    def _discard(self) -> list[int | None]:
        """Kill the child (dead already, or hung) and forget the pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return []
        procs = list((pool._processes or {}).values())  # no public handle before 3.14
        for proc in procs:
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.join(STOP_S)
        return [proc.exitcode for proc in procs]

    def close(self) -> None:
        """After the final flush: let the child exit, bounded."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + STOP_S
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("writer process did not exit; killed", pid=proc.pid)
                proc.kill()
                proc.join(STOP_S)


# --- the child ---------------------------------------------------------------

_store: Store | None = None
_decode = msgspec.msgpack.Decoder(FlushBatch).decode


def _start_child(settings: Settings, schema: str, parent: int) -> None:
    global _store
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _store = open_store(settings, schema)


def _exit_with_parent(parent: int) -> None:
    """A parent killed by SIGKILL leaves no orphan: the child is re-parented."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _ping() -> None:
    return None


def _flush(data: bytes) -> FlushStats:
    assert _store is not None
    try:
        return _store.flush(_decode(data))
    except DATABASE_ERRORS as exc:
        # Driver exceptions do not all pickle: send their diagnosis instead.
        raise to_flush_failed(exc) from None
    except Exception as exc:
        raise FlushBug(f"{type(exc).__name__}: {one_line(exc)}") from None


def to_flush_failed(exc: BaseException) -> FlushFailed:
    found = diagnose(exc)
    return FlushFailed(one_line(exc), found.error_class, found.reason)

"""A trio server in a daemon thread of this process, for tests and drills that
drive it from synchronous code (the TCP and UDP relays)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import trio

READY_TIMEOUT_S = 10.0
T = TypeVar("T")


class ServerThread:
    """Runs ``serve(task_status=...)`` on its own trio loop; a context manager.

    A daemon thread: a test that fails before :meth:`close` must not hang the
    interpreter. ``error`` is raised (with ``what``) when the server does not start.
    """

    def __init__(
        self,
        serve: Callable[..., Awaitable[Any]],
        *,
        name: str,
        what: str,
        error: type[Exception],
    ) -> None:
        self._serve, self._name, self._what, self._error_type = serve, name, what, error
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop = trio.CancelScope()
        self._error: BaseException | None = None

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=self._name, daemon=True
        )
        self._thread.start()
        if not ready.wait(READY_TIMEOUT_S) or self._token is None:
            self._thread.join(READY_TIMEOUT_S)
            raise self._error_type(f"{self._what} did not start: {self._error!r}")
        return self

    def _run(self, ready: threading.Event) -> None:
        try:
            trio.run(self._main, ready)
        except BaseException as e:  # reported by start()
            self._error = e
        finally:
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        with self._stop:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._serve)
                self._token = trio.lowlevel.current_trio_token()
                ready.set()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the server's loop, from this (another) thread."""
        if self._token is None:
            raise self._error_type(f"{self._what} is not running")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._thread is None:
            return
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.cancel, trio_token=self._token)
        self._thread.join()
        self._thread = None
        self._token = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

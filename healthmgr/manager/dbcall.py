"""Database calls from the trio side, with their age visible to the monitor.

Every call the daemon makes to the store goes through :class:`DbCalls.run`
(a worker thread: SQLAlchemy is synchronous). The monitor asks ``oldest_age``:
a call that has been running longer than the stall bound makes the manager
impaired before the call itself times out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class DbCalls:
    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._ids = itertools.count()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        token = next(self._ids)
        self._started[token] = trio.current_time()
        try:
            return await trio.to_thread.run_sync(fn, *args)
        finally:
            del self._started[token]

    def oldest_age(self, now: float) -> float:
        return max((now - t for t in self._started.values()), default=0.0)

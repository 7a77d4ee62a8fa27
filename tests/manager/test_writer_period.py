"""The writer's flush period: flushes start every flush_interval, and a flush
that took longer is followed at once (bigger batches at high rates, latency
within about two flush times). Trio's virtual clock; the database call is a
stand-in that takes a set time (what is measured here is only the schedule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from healthmgr.db.flush import FlushStats
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.pending import Pending
from healthmgr.manager.writer import Writer


class BusyView:
    """A view with a heartbeat pending at every flush."""

    @property
    def pending(self) -> Pending:
        pending = Pending()
        pending.bump(b"\x01" * 16, 1)
        return pending

    @pending.setter
    def pending(self, value: Pending) -> None:
        pass


class TimedDb(DbCalls):
    """A database call that takes ``seconds``; records when each one started."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.starts: list[float] = []

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.starts.append(trio.current_time())
        await trio.sleep(self.seconds)
        return fn(*args)


async def flush_starts(takes: float, interval: float = 0.25, count: int = 4) -> list[float]:
    db = TimedDb(takes)
    writer = Writer(
        BusyView(),
        lambda batch: FlushStats(),
        Metrics(process=False),  # type: ignore[arg-type]
        interval=interval,
        db=db,
    )
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        while len(db.starts) < count:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return [round(t - start, 3) for t in db.starts[:count]]


@pytest.mark.parametrize("takes", [0.0, 0.1])
async def test_a_quick_flush_keeps_the_interval(takes: float, autojump_clock: Any) -> None:
    assert await flush_starts(takes) == [0.25, 0.5, 0.75, 1.0]


async def test_a_slow_flush_is_followed_at_once(autojump_clock: Any) -> None:
    assert await flush_starts(0.4) == [0.25, 0.65, 1.05, 1.45]

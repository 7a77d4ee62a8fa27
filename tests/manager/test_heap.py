"""The daemon gives glibc's free heap pages back to the kernel every few seconds."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from healthmgr.manager import heap


def test_glibc_malloc_trim_is_found_and_runs() -> None:
    trim = heap.malloc_trim()
    assert trim is not None  # this machine's C library is glibc
    assert trim() in (0, 1)  # 1: memory was released, 0: there was none to release


async def test_trims_once_an_interval_until_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []

    def trim() -> int:
        calls.append(trio.current_time())
        return 1

    async def inline(fn: object) -> int:  # the worker thread would let the clock jump on
        return trim()

    with trio.move_on_after(35):
        await heap.trim_heap(10, trim, inline)
    assert calls == [10, 20, 30]


async def test_without_malloc_trim_the_task_ends_at_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heap, "malloc_trim", lambda: None)
    with trio.fail_after(1):
        await heap.trim_heap(10)
    assert trio.current_time() == 0

"""The C heap's free pages back to the kernel, every few seconds.

glibc keeps what the daemon frees: a fleet's first contact (topology loads,
flush batches, SQLite's heap) leaves free space resident, measured at 430-520
bytes per amphora at 100,000 (docs/performance.md, "Where the daemon's
resident bytes are"). ``malloc_trim(0)`` gives back the free pages inside the
heap as well as at its top. It holds malloc's lock while it walks the heap
(3-13 ms at 100,000 amphorae), so it runs in a worker thread, which ctypes
lets run without the GIL, once every ``TRIM_INTERVAL_S``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Awaitable, Callable

import trio

TRIM_INTERVAL_S = 10.0


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the symbols already in this process
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


async def trim_heap(
    interval: float = TRIM_INTERVAL_S,
    trim: Callable[[], int] | None = None,
    in_thread: Callable[[Callable[[], int]], Awaitable[int]] = trio.to_thread.run_sync,
) -> None:
    """Trim every ``interval`` seconds until cancelled; return at once without a trim."""
    trim = trim or malloc_trim()
    if trim is None:
        return
    while True:
        await trio.sleep(interval)
        await in_thread(trim)

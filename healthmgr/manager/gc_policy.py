"""The daemon's cyclic garbage collector: young collections less often.

CPython's default (a young collection every 700 net allocations of tracked
objects, a middle one every 10 of those) examines the view's pending
reports, dictionaries and the flush's rows several times during their
quarter-second life, so most of them survive into the oldest generation,
and every few seconds a full collection walks the whole topology cache
(about 0.1 s at 20,000 amphorae, on whichever thread allocates: a stall of
the receive loop). Loading the fleet at start-up ran ten of them.

A young collection every ``THRESHOLDS[0]`` allocations lets that short-lived
state die by reference count first; the collector still runs, so garbage
cycles are still freed, only later (a few MB at most).
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 10, 10)


def collect_less_often() -> tuple[int, int, int]:
    """Set the daemon's thresholds; return the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return previous

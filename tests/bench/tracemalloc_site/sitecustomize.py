"""Tracemalloc in a daemon started by a bench (imported through PYTHONPATH).

With ``HEALTHMGR_BENCH_TRACEMALLOC=PATH`` set, tracing starts before
anything is imported (``HEALTHMGR_BENCH_TRACEMALLOC_FRAMES`` frames per
allocation, default 8), and SIGUSR2 dumps a snapshot to PATH (written to
PATH.tmp, then renamed, so a reader sees it whole).
"""

from __future__ import annotations

import os
import signal
import tracemalloc

_PATH = os.environ.get("HEALTHMGR_BENCH_TRACEMALLOC")


def _dump(signum: int, frame: object) -> None:
    assert _PATH
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(_PATH + ".tmp")
    os.replace(_PATH + ".tmp", _PATH)


if _PATH:
    tracemalloc.start(int(os.environ.get("HEALTHMGR_BENCH_TRACEMALLOC_FRAMES", "8")))
    signal.signal(signal.SIGUSR2, _dump)

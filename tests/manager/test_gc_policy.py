"""The daemon's garbage-collector thresholds (healthmgr.manager.gc_policy)."""

from __future__ import annotations

import gc

from healthmgr.manager.gc_policy import THRESHOLDS, collect_less_often


def test_collect_less_often_sets_the_thresholds_and_returns_the_previous() -> None:
    before = gc.get_threshold()
    try:
        assert collect_less_often() == before
        assert gc.get_threshold() == THRESHOLDS
        assert gc.isenabled()  # cycles are still collected, only later
    finally:
        gc.set_threshold(*before)


def test_a_flushs_worth_of_short_lived_objects_triggers_no_collection() -> None:
    """5,000 dictionaries alive at once (a flush's rows): CPython's default
    would run seven young collections over them, the daemon's none."""
    before = gc.get_threshold()
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    collect_less_often()
    gc.collect()  # an empty young generation to start from
    gc.callbacks.append(record)
    try:
        rows = [{"row": i} for i in range(5000)]
        del rows
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*before)
    assert started == []

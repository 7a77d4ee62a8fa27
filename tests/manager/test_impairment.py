"""The manager's own health, as a pure state machine over samples."""

from __future__ import annotations

from healthmgr.rules.impairment import (
    DB_STALLED,
    DB_UNREACHABLE,
    DB_WRITE_FAILED,
    KERNEL_DROPS,
    LOOP_LAG,
    Impairment,
    Sample,
)


def fresh(**kw) -> Impairment:
    kw.setdefault("db_stall_after", 2.0)
    kw.setdefault("lag_after", 0.5)
    return Impairment(**kw)


def test_a_start_is_a_recovery_the_grace_counts_from_it() -> None:
    imp = fresh(started_at=100.0)
    assert not imp.impaired
    assert imp.healthy_for(103.0) == 3.0


def test_failing_writes_impair_until_a_sample_says_otherwise() -> None:
    imp = fresh()
    change = imp.update(Sample(now=1.0, db_failing=True))
    assert change is not None and change.impaired and change.started == (DB_WRITE_FAILED,)
    assert imp.healthy_for(1.5) is None
    assert imp.update(Sample(now=1.25, db_failing=True)) is None  # no change, no line
    change = imp.update(Sample(now=1.5))
    assert change is not None and not change.impaired
    assert imp.healthy_for(4.5) == 3.0  # the grace starts at the recovery


def test_a_stalled_call_impairs_before_it_fails() -> None:
    imp = fresh(db_stall_after=2.0)
    assert imp.update(Sample(now=1.0, db_busy_for=1.9)) is None
    change = imp.update(Sample(now=1.25, db_busy_for=2.1))
    assert change is not None and change.reasons == (DB_STALLED,)
    assert imp.update(Sample(now=1.5, db_busy_for=0.0)).impaired is False


def test_kernel_drops_impair_and_are_held_a_moment_after_they_stop() -> None:
    imp = fresh(hold=2.0)
    imp.update(Sample(now=0.0, kernel_drops=5))  # the first reading is a baseline
    assert not imp.impaired
    change = imp.update(Sample(now=0.25, kernel_drops=9))
    assert change is not None and change.reasons == (KERNEL_DROPS,)
    assert imp.update(Sample(now=2.0, kernel_drops=9)) is None  # held
    assert imp.update(Sample(now=2.3, kernel_drops=9)).impaired is False


def test_several_reasons_at_once_and_each_counted_once() -> None:
    imp = fresh()
    imp.update(Sample(now=0.0, kernel_drops=0))
    first = imp.update(Sample(now=0.25, db_unreadable=True, loop_lag=0.9, kernel_drops=0))
    assert first.reasons == (DB_UNREACHABLE, LOOP_LAG) and first.started == first.reasons
    second = imp.update(Sample(now=0.5, db_unreadable=True, loop_lag=0.9, kernel_drops=1))
    assert second.started == (KERNEL_DROPS,)
    assert imp.reason() == "db_unreachable,kernel_drops,loop_lag"

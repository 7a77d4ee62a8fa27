"""Logging: JSON off a terminal, stdlib routed the same way, rate-limited rejections."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from healthmgr.logging import (
    RateLimitedLogger,
    RateLimiter,
    configure_logging,
    get_logger,
    set_level,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("INFO", "auto", out)
    yield out
    configure_logging("INFO", "json", io.StringIO())


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_when_not_a_tty_with_stdlib_routed(stream: io.StringIO) -> None:
    log = get_logger("healthmgr.test")
    log.info("hello", amphora_id="a1")
    log.debug("hidden")
    logging.getLogger("sqlalchemy.engine").warning("pool %s exhausted", "main")
    logging.getLogger("alembic").info("migrating")
    records = lines(stream)
    assert [r["event"] for r in records] == ["hello", "pool main exhausted", "migrating"]
    assert records[0]["logger"] == "healthmgr.test" and records[0]["amphora_id"] == "a1"
    assert records[1]["logger"] == "sqlalchemy.engine" and records[1]["level"] == "warning"
    assert all("timestamp" in r for r in records)


def test_level_changes_reach_existing_loggers(stream: io.StringIO) -> None:
    log = get_logger("x")
    bound = log.bind(k=1)
    log.debug("before")
    set_level("debug")
    log.debug("after")
    bound.debug("bound")
    logging.getLogger("lib").debug("stdlib")
    assert [r["event"] for r in lines(stream)] == ["after", "bound", "stdlib"]
    with pytest.raises(ValueError, match="VERBOSE"):
        set_level("verbose")


def test_exception_without_locals(stream: io.StringIO) -> None:
    secret = "do-not-log-me"  # noqa: F841  (a local that must not reach the log)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("x").exception("failed")
    [record] = lines(stream)
    assert record["exception"][0]["exc_type"] == "RuntimeError"
    assert "do-not-log-me" not in stream.getvalue()


def test_console_format() -> None:
    out = io.StringIO()
    configure_logging("INFO", "console", out)
    get_logger("x").info("readable", a=1)
    text = out.getvalue()
    assert "readable" in text and "a=1" in text and not text.startswith("{")
    configure_logging("INFO", "json", io.StringIO())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_counts_what_it_holds_back() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, clock)
    assert limiter.admit("bad_signature") == 0
    assert limiter.admit("bad_signature") is None
    assert limiter.admit("bad_signature") is None
    assert limiter.admit("replayed") == 0  # each reason has its own window
    clock.now += 10
    assert limiter.admit("bad_signature") == 2
    clock.now += 3
    assert limiter.admit("bad_signature") is None
    assert limiter.drain() == {}  # window still open
    clock.now += 10
    assert limiter.drain() == {"bad_signature": 1}
    assert limiter.admit("bad_signature") == 0


def test_a_burst_lets_that_many_through_per_window() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, clock, burst=3)
    assert [limiter.admit("late") for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 10
    assert limiter.admit("late") == 2  # the new window: one of three, two held before


def test_zero_interval_lets_everything_through() -> None:
    limiter = RateLimiter(0.0, Clock())
    assert [limiter.admit("x") for _ in range(3)] == [0, 0, 0]


class ListLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.records.append((event, fields))


def test_rate_limited_logger_lines() -> None:
    clock, sink = Clock(), ListLogger()
    rejected = RateLimitedLogger(5.0, sink, clock=clock)
    assert rejected.rejected("bad_signature", ("192.0.2.7", 40000), "hmac mismatch")
    for port in range(1000):
        assert not rejected.rejected("bad_signature", ("192.0.2.8", port))
    clock.now += 5
    assert rejected.rejected("bad_signature", ("2001:db8::1", 5555, 0, 0))
    rejected.rejected("malformed", ("192.0.2.9", 1))
    clock.now += 5
    rejected.rejected("malformed", ("192.0.2.9", 1))
    rejected.rejected("malformed", ("192.0.2.9", 1))  # held back, reported by flush
    clock.now += 5
    assert rejected.flush() == 1
    assert sink.records == [
        (
            "heartbeat rejected",
            {"reason": "bad_signature", "source": "192.0.2.7:40000", "detail": "hmac mismatch"},
        ),
        (
            "heartbeat rejected",
            {"reason": "bad_signature", "source": "[2001:db8::1]:5555", "suppressed": 1000},
        ),
        ("heartbeat rejected", {"reason": "malformed", "source": "192.0.2.9:1"}),
        ("heartbeat rejected", {"reason": "malformed", "source": "192.0.2.9:1"}),
        ("heartbeat rejected", {"reason": "malformed", "suppressed": 1, "summary": True}),
    ]


def test_rate_limited_logger_through_structlog(stream: io.StringIO) -> None:
    rejected = RateLimitedLogger(60.0, clock=Clock())
    rejected.rejected("replayed", ("10.0.0.1", 5555))
    rejected.rejected("replayed", ("10.0.0.1", 5555))
    [record] = lines(stream)
    assert record["event"] == "heartbeat rejected"
    assert (record["reason"], record["source"], record["level"]) == (
        "replayed",
        "10.0.0.1:5555",
        "warning",
    )


def test_a_fleet_wide_verdict_is_a_budget_of_lines_and_one_summary(stream: io.StringIO) -> None:
    """10 amphorae late at once with a budget of 3: three lines, and one summary
    of the other seven when the interval ends; no rate-limit window is kept for
    the seven (the memory of a 100,000-amphora restart stays bounded)."""
    from healthmgr.manager.verdict_log import VerdictLog

    now = [0.0]
    verdicts = VerdictLog(interval=60.0, clock=lambda: now[0], per_kind=3)
    said = [verdicts.say("late", kind="late", amphora_id=f"amp-{i}") for i in range(10)]
    assert said == [True] * 3 + [False] * 7
    assert len(verdicts.limiter._windows) == 3
    # A repeat from an amphora already logged is the per-amphora limiter's, not the budget's.
    assert verdicts.say("late", kind="late", amphora_id="amp-0") is False
    # Another kind has its own budget.
    assert verdicts.say("unknown", kind="unknown_amphora", amphora_id="amp-9") is True
    now[0] = 61.0
    verdicts.flush()
    logged = [(x["event"], x["reason"], x.get("suppressed")) for x in lines(stream)]
    assert logged[:4] == [("late", "late", None)] * 3 + [("unknown", "unknown_amphora", None)]
    assert ("verdicts held back", "late", 7) in logged[4:]
    assert ("verdicts held back", "late", 1) in logged[4:]  # amp-0's repeat
    assert verdicts.kinds._windows == {}
    # A new interval: a new budget.
    assert verdicts.say("late", kind="late", amphora_id="amp-5") is True

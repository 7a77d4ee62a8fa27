"""The detector's rules over plain values (no database, no clock of its own)."""

from __future__ import annotations

import pytest

from healthmgr.rules.detector import (
    BREAKER_OPEN,
    HEARTBEAT_TIMEOUT,
    LISTENER_COUNT,
    OBSERVER_IMPAIRED,
    OBSERVER_PRESUMED_DEAD,
    OBSERVER_RECOVERING,
    OBSERVER_UNREACHABLE,
    RATE_LIMITED,
    SETTLING,
    Action,
    Detector,
    DetectorConfig,
    Observer,
    SelfHealth,
    Silent,
    Snapshot,
    Threshold,
)

T, INTERVAL = 10.0, 1.0  # heartbeat_timeout, heartbeat_interval: settle 2 s, suspect after 2 s
HEALTHY = SelfHealth(False, None, 3600.0)
ME = "hm-me"
LIVE = Observer("hm-a", age=0.5, healthy_for=3600.0)


def config(**kw) -> DetectorConfig:
    kw.setdefault("threshold", Threshold(count=20))
    return DetectorConfig(heartbeat_timeout=T, heartbeat_interval=INTERVAL, **kw)


def snap(silent: list[Silent], fleet: int = 100, observers=None, **kw) -> Snapshot:
    kw.setdefault("stopped_count", sum(a.stopped for a in silent))
    kw.setdefault("recent_failovers", 0)
    return Snapshot(silent, len(silent), fleet, observers=observers or {"hm-a": LIVE}, **kw)


def amp(i: int, silent_for: float, **kw) -> Silent:
    kw.setdefault("observer", "hm-a")
    return Silent(f"amp-{i}", f"lb-{i}", silent_for, **kw)


def test_an_impaired_manager_makes_no_verdict() -> None:
    d = Detector(config())
    decision = d.decide(snap([amp(1, 60)]), SelfHealth(True, "kernel_drops", None), 100.0)
    assert (decision.judging, decision.not_judging_because) == (False, "impaired: kernel_drops")
    assert decision.failover == decision.stop == ()


def test_no_verdict_until_healthy_for_a_full_timeout() -> None:
    d = Detector(config())
    assert not d.decide(snap([amp(1, 60)]), SelfHealth(False, None, T - 0.1), 0).judging
    assert d.decide(snap([amp(1, 60)]), SelfHealth(False, None, T), 0).judging


def test_a_stale_amphora_is_held_for_the_settle_window_then_failed_over() -> None:
    d = Detector(config())
    held = d.decide(snap([amp(1, T + 1.0)]), HEALTHY, 0)
    assert [(v.amphora_id, v.action, v.reason) for v in held.deferred] == [
        ("amp-1", Action.DEFER, SETTLING)
    ]
    assert held.failover == ()
    done = d.decide(snap([amp(1, T + 2.0)]), HEALTHY, 1)
    assert [(v.amphora_id, v.load_balancer_id, v.reason) for v in done.failover] == [
        ("amp-1", "lb-1", HEARTBEAT_TIMEOUT)
    ]


def test_an_amphora_beating_with_the_wrong_listener_count_says_so() -> None:
    d = Detector(config())
    done = d.decide(snap([amp(1, 60, beating_unhealthy=True)]), HEALTHY, 0)
    assert [v.reason for v in done.failover] == [LISTENER_COUNT]


@pytest.mark.parametrize(
    ("observer", "reason"),
    [
        (Observer("hm-a", age=30.0, healthy_for=3600.0), OBSERVER_UNREACHABLE),
        (Observer("hm-a", age=0.5, stopped=True), OBSERVER_UNREACHABLE),
        (Observer("hm-a", age=0.5, impaired=True), OBSERVER_IMPAIRED),
        (Observer("hm-a", age=0.5, healthy_for=T / 2), OBSERVER_RECOVERING),
    ],
)
def test_silence_seen_by_an_observer_that_could_not_see_is_deferred(
    observer: Observer, reason: str
) -> None:
    """157 of 157 of a cut-off manager's amphorae: deferred, not failed over,
    and they do not open the breaker either (their silence is not evidence)."""
    d = Detector(config())
    silent = [amp(i, 60) for i in range(157)]
    decision = d.decide(snap(silent, fleet=300, observers={"hm-a": observer}), HEALTHY, 0)
    assert decision.failover == decision.stop == ()
    assert not decision.breaker_open
    assert {v.reason for v in decision.deferred} == {reason}
    assert len(decision.deferred) == 157


def test_deferral_is_bounded_by_observer_timeout() -> None:
    d = Detector(config(observer_timeout=120.0))
    gone = Observer("hm-a", age=500.0)
    decision = d.decide(snap([amp(1, 119.0)], observers={"hm-a": gone}), HEALTHY, 0)
    assert [v.reason for v in decision.deferred] == [OBSERVER_UNREACHABLE]
    decision = d.decide(snap([amp(1, 120.0)], observers={"hm-a": gone}), HEALTHY, 1)
    assert [(v.action, v.reason) for v in decision.failover] == [
        (Action.FAILOVER, OBSERVER_PRESUMED_DEAD)
    ]


def test_an_observer_whose_row_is_gone_is_presumed_dead() -> None:
    d = Detector(config())
    decision = d.decide(snap([amp(1, 60, observer="hm-gone")]), HEALTHY, 0)
    assert [v.reason for v in decision.failover] == [OBSERVER_PRESUMED_DEAD]


def test_a_gradual_mass_outage_fails_over_nothing() -> None:
    """40 of 100 go silent a few per check over a whole heartbeat_timeout: the
    settle window and the suspect count let the breaker see it whole."""
    d = Detector(config())
    went_silent = {i: i * (T / 40) for i in range(40)}  # evenly over T seconds
    failovers, stops = [], []
    now = 0.0
    while now < 3 * T:
        silent = [amp(i, now - t0) for i, t0 in went_silent.items() if now - t0 >= 2 * INTERVAL]
        decision = d.decide(snap(silent), HEALTHY, now)
        failovers += decision.failover
        stops += decision.stop
        now += 0.3
    assert failovers == []
    assert d.breaker_open
    assert {v.amphora_id for v in stops} == {f"amp-{i}" for i in range(40)}


def test_the_breaker_does_not_close_in_the_middle_of_a_recovery() -> None:
    """40 stopped amphorae come back one by one; 5 never do. Nothing is failed
    over while they return; a quiet timeout after the last returns, the
    breaker closes and the 5 still silent are failed over (rate-limited)."""
    d = Detector(config())
    stopped = [amp(i, 60, stopped=True) for i in range(40)]
    assert d.decide(snap(stopped), HEALTHY, 0.0).breaker_open
    now, back = 0.0, 0
    while back < 35:
        now += 0.3
        back += 1  # one more amphora beats again (the flush made it ALLOCATED)
        decision = d.decide(snap(stopped[back:], stopped_count=40 - back), HEALTHY, now)
        assert decision.failover == ()
        assert decision.breaker_open
    last_return = now
    while now < last_return + T - 0.3:
        now += 0.3
        assert d.decide(snap(stopped[35:]), HEALTHY, now).failover == ()
    now += 0.6
    decision = d.decide(snap(stopped[35:]), HEALTHY, now)
    assert decision.breaker_changed and not decision.breaker_open
    assert sorted(v.amphora_id for v in decision.failover) == [f"amp-{i}" for i in range(35, 40)]


def test_breaker_stops_only_allocated_ones_and_holds_the_rest() -> None:
    d = Detector(config())
    silent = [amp(i, 60, stopped=i % 2 == 0) for i in range(20)]
    decision = d.decide(snap(silent), HEALTHY, 0)
    assert decision.breaker_changed and decision.breaker_open
    assert "20 of 100 amphorae silent" in decision.breaker_reason
    assert {v.amphora_id for v in decision.stop} == {f"amp-{i}" for i in range(1, 20, 2)}
    assert {v.reason for v in decision.deferred} == {BREAKER_OPEN}


def test_failovers_are_rate_limited_across_managers() -> None:
    d = Detector(config(threshold=Threshold(count=20)))  # rate: 10 per heartbeat_timeout
    silent = [amp(i, 60) for i in range(6)]
    decision = d.decide(snap(silent, recent_failovers=7), HEALTHY, 0)
    assert len(decision.failover) == 3
    assert [v.reason for v in decision.deferred] == [RATE_LIMITED] * 3


def test_the_default_threshold_is_a_share_of_the_fleet_with_a_floor() -> None:
    assert Threshold.parse("10%").resolve(1000) == 100
    assert Threshold.parse("10%").resolve(4) == 3
    assert Threshold.parse(20).resolve(1000) == 20
    assert Threshold.parse(None).resolve(1000) is None
    d = Detector(config(threshold=Threshold.parse("10%")))
    decision = d.decide(snap([amp(i, 60) for i in range(3)], fleet=4), HEALTHY, 0)
    assert decision.breaker_open and decision.threshold == 3


def test_a_lost_manager_raises_the_silence_that_counts_toward_the_breaker() -> None:
    """Agents send round robin to two managers and one is gone: every live
    amphora is heard every other interval. That gap must not look like a mass
    outage (it opened the breaker for the whole fleet in a chaos run)."""
    cfg = DetectorConfig(
        heartbeat_timeout=4.0,
        heartbeat_interval=1.0,
        threshold=Threshold(count=20),
        observer_fresh=2.0,
    )
    assert cfg.suspect_after(0) == 2.0 and cfg.suspect_after(1) == 3.0
    gone = Observer("hm-gone", age=30.0)
    gapped = [amp(i, 2.5, observer=ME) for i in range(60)]  # heard every 2 s, plus lag
    observers = {ME: Observer(ME, 0.0, healthy_for=3600.0), "hm-gone": gone}
    decision = Detector(cfg).decide(snap(gapped, observers=observers), HEALTHY, 0)
    assert not decision.breaker_open and decision.failover == ()
    alone = {ME: Observer(ME, 0.0, healthy_for=3600.0)}
    assert Detector(cfg).decide(snap(gapped, observers=alone), HEALTHY, 0).breaker_open

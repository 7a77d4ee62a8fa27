"""One test (or more) per row of docs/status-rules.md, named after the row id."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from healthmgr.rules import constants as c
from healthmgr.rules.batch import STATUS_TABLES, StatusWrite
from healthmgr.rules.status import StatusOutcome, apply, evaluate, evaluate_amphora, is_healthy
from healthmgr.rules.topology import (
    AmphoraTopology,
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
)
from healthmgr.wire.haproxy_status import (
    listener_state_from_haproxy,
    member_state_from_haproxy,
    pool_state_from_haproxy,
)
from healthmgr.wire.ids import Id
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
)

L, P, M = ListenerState, PoolState, MemberState

# --- builders: readable names in, 16-byte ids inside -------------------------


def uid(name: str) -> Id:
    return name.encode().ljust(16, b"\0")


def name(raw: Id) -> str:
    return raw.rstrip(b"\0").decode()


def member(n: str, status: str = c.ONLINE, pool: str = "P1", enabled: bool = True):
    return MemberTopology(uid(n), uid(pool), enabled, status)


def pool(n: str, *members: MemberTopology, status: str = c.ONLINE, enabled: bool = True):
    return PoolTopology(uid(n), enabled, status, members)


def listener(n: str, status: str = c.ONLINE, enabled: bool = True, default_pool: str | None = None):
    return ListenerTopology(uid(n), enabled, status, uid(default_pool) if default_pool else None)


def topology(
    listeners=None,
    pools=None,
    *,
    status: str = c.ONLINE,
    provisioning: str = c.ACTIVE,
    enabled: bool = True,
) -> LoadBalancerTopology:
    """Default: LB1 with listener L1 -> pool P1 with members M1 and M2, all ONLINE."""
    if listeners is None:
        listeners = (listener("L1", default_pool="P1"),)
    if pools is None:
        pools = (pool("P1", member("M1"), member("M2")),)
    return LoadBalancerTopology(
        uid("LB1"), enabled, provisioning, status, tuple(listeners), tuple(pools)
    )


def report(n: str, state: ListenerState = L.OPEN) -> ListenerReport:
    return ListenerReport(uid(n), state, 0, 0, 0, 0, 0)


def pool_report(
    n: str, state: PoolState = P.UP, members: dict[str, MemberState] | None = None, lst="L1"
) -> PoolReport:
    if members is None:
        members = {"M1": M.UP, "M2": M.UP}
    mrs = tuple(MemberReport(uid(k), v) for k, v in members.items())
    return PoolReport(uid(n), uid(lst) if lst else None, state, mrs)


def heartbeat(
    listeners: dict[str, ListenerState] | None = None,
    pools: list[PoolReport] | None = None,
    amphora: str = "A1",
) -> Heartbeat:
    """Default: the healthy report of the default topology."""
    if listeners is None:
        listeners = {"L1": L.OPEN}
    if pools is None:
        pools = [pool_report("P1")]
    return Heartbeat(
        amphora_id=uid(amphora),
        seq=1,
        sent_at_ms=0,
        interval_ms=10_000,
        counters_epoch=1,
        listeners=tuple(report(k, v) for k, v in listeners.items()),
        pools=tuple(pools),
    )


def changes(outcome: StatusOutcome) -> dict[str, str]:
    """Outcome as {name: new status}; the load balancer is 'LB1'."""
    out = {name(w.id): w.operating_status for w in outcome.writes()}
    return out


def with_member(state: MemberState, current: str = c.ONLINE) -> dict[str, str]:
    """Changes when M1 (currently ``current``) is reported ``state`` in pool P1."""
    lb = topology(pools=(pool("P1", member("M1", current), member("M2")),))
    out = evaluate(lb, heartbeat(pools=[pool_report("P1", members={"M1": state, "M2": M.UP})]))
    return changes(out)


# --- listeners ---------------------------------------------------------------


def test_R1_listener_open_is_online():
    lb = topology(listeners=(listener("L1", c.OFFLINE),))
    out = evaluate(lb, heartbeat({"L1": listener_state_from_haproxy("OPEN")}))
    assert changes(out) == {"L1": c.ONLINE}
    assert out.healthy


def test_R2_listener_full_is_degraded_and_degrades_an_online_lb():
    out = evaluate(topology(), heartbeat({"L1": listener_state_from_haproxy("FULL")}))
    assert changes(out) == {"L1": c.DEGRADED, "LB1": c.DEGRADED}


def test_R2_full_listener_leaves_a_disabled_lb_offline():
    lb = topology(status=c.OFFLINE, enabled=False)
    out = evaluate(lb, heartbeat({"L1": L.FULL}))
    assert changes(out) == {"L1": c.DEGRADED}


@pytest.mark.parametrize("raw", ["STOP", "WAITING", ""])
def test_R3_other_listener_states_leave_it_unchanged(raw):
    lb = topology(listeners=(listener("L1", c.ERROR),))
    out = evaluate(lb, heartbeat({"L1": listener_state_from_haproxy(raw)}))
    assert changes(out) == {}
    assert out.healthy  # still reported: it counts for the listener-count rule


def test_R4_missing_enabled_listener_of_active_lb_is_error():
    lb = topology(listeners=(listener("L1", default_pool="P1"), listener("L2")))
    out = evaluate(lb, heartbeat())
    assert changes(out) == {"L2": c.ERROR}
    assert not out.healthy


@pytest.mark.parametrize(
    ("lb_kwargs", "enabled"),
    [
        ({}, False),  # a disabled listener: Octavia's agent does not report it
        ({"provisioning": c.PENDING_UPDATE}, True),
        ({"provisioning": c.PENDING_CREATE}, True),
        ({"provisioning": c.ERROR}, True),
        ({"enabled": False, "status": c.OFFLINE}, True),  # differs from Octavia
    ],
    ids=["listener-disabled", "PENDING_UPDATE", "PENDING_CREATE", "lb-prov-ERROR", "lb-disabled"],
)
def test_R5_missing_listener_otherwise_is_offline(lb_kwargs, enabled):
    lb = topology(
        listeners=(listener("L1", default_pool="P1"), listener("L2", enabled=enabled)),
        **lb_kwargs,
    )
    out = evaluate(lb, heartbeat())
    assert changes(out)["L2"] == c.OFFLINE


def test_R5_disabled_listener_not_reported_is_healthy():
    lb = topology(listeners=(listener("L1", default_pool="P1"), listener("L2", enabled=False)))
    out = evaluate(lb, heartbeat())
    assert changes(out) == {"L2": c.OFFLINE}
    assert out.healthy


def test_R5_disabled_listener_reported_anyway_breaks_the_count():
    # What HAProxy reports is applied (as Octavia), but the count no longer matches.
    lb = topology(listeners=(listener("L1", default_pool="P1"), listener("L2", c.OFFLINE, False)))
    out = evaluate(lb, heartbeat({"L1": L.OPEN, "L2": L.OPEN}))
    assert changes(out) == {"L2": c.ONLINE}
    assert not out.healthy


# --- pools -------------------------------------------------------------------


def test_R6_pool_up_is_online():
    lb = topology(pools=(pool("P1", member("M1"), member("M2"), status=c.OFFLINE),))
    out = evaluate(lb, heartbeat(pools=[pool_report("P1", pool_state_from_haproxy("UP"))]))
    assert changes(out) == {"P1": c.ONLINE}


def test_R7_pool_down_is_error_and_lb_error():
    hb = heartbeat(pools=[pool_report("P1", pool_state_from_haproxy("DOWN"), {"M1": M.DOWN})])
    out = evaluate(topology(), hb)
    assert changes(out) == {"P1": c.ERROR, "M1": c.ERROR, "M2": c.OFFLINE, "LB1": c.ERROR}


@pytest.mark.parametrize("raw", ["MAINT", "no server", ""])
def test_R8_other_pool_state_leaves_it_unchanged_but_members_are_evaluated(raw):
    lb = topology(pools=(pool("P1", member("M1"), member("M2"), status=c.DEGRADED),))
    hb = heartbeat(
        pools=[pool_report("P1", pool_state_from_haproxy(raw), {"M1": M.DOWN, "M2": M.UP})]
    )
    out = evaluate(lb, hb)
    # As in Octavia a DOWN member only degrades a pool (and LB) reported UP.
    assert changes(out) == {"M1": c.ERROR}


def test_R9_online_pool_with_a_down_member_is_degraded_and_degrades_the_lb():
    ch = with_member(M.DOWN)
    assert ch == {"M1": c.ERROR, "P1": c.DEGRADED, "LB1": c.DEGRADED}


def test_R9_degraded_pool_with_all_members_up_is_online_again():
    lb = topology(
        pools=(pool("P1", member("M1", c.ERROR), member("M2"), status=c.DEGRADED),),
        status=c.DEGRADED,
    )
    assert changes(evaluate(lb, heartbeat())) == {"M1": c.ONLINE, "P1": c.ONLINE, "LB1": c.ONLINE}


def test_R10_unreported_pool_is_offline_and_its_members_keep_their_status():
    lb = topology(
        pools=(
            pool("P1", member("M1"), member("M2")),
            pool("P2", member("M3", c.ERROR, pool="P2"), member("M4", c.NO_MONITOR, pool="P2")),
        )
    )
    out = evaluate(lb, heartbeat())
    assert changes(out) == {"P2": c.OFFLINE}


def test_R10_unreported_pool_already_offline_writes_nothing():
    lb = topology(pools=(pool("P1", member("M1"), member("M2")), pool("P2", status=c.OFFLINE)))
    assert changes(evaluate(lb, heartbeat())) == {}


def test_R10_pools_of_a_missing_listener_go_offline():
    lb = topology()
    out = evaluate(lb, heartbeat(listeners={}, pools=[]))
    assert changes(out) == {"L1": c.ERROR, "P1": c.OFFLINE}  # LB unchanged: R21


# --- a pool shared by two listeners (R11) ------------------------------------


def shared_lb(**kwargs) -> LoadBalancerTopology:
    return topology(
        listeners=(listener("L1", default_pool="P1"), listener("L2", default_pool="P1")), **kwargs
    )


@pytest.mark.parametrize("order", ["up-first", "down-first"])
def test_R11_shared_pool_down_in_one_backend_is_down(order):
    reports = [pool_report("P1", P.UP, lst="L1"), pool_report("P1", P.DOWN, lst="L2")]
    if order == "down-first":
        reports.reverse()
    out = evaluate(shared_lb(), heartbeat({"L1": L.OPEN, "L2": L.OPEN}, reports))
    assert changes(out) == {"P1": c.ERROR, "LB1": c.ERROR}
    assert out.healthy and not out.names_unknown_objects


@pytest.mark.parametrize("order", ["up-first", "down-first"])
def test_R11_shared_pool_member_down_in_one_backend_is_error(order):
    reports = [
        pool_report("P1", P.UP, {"M1": M.UP, "M2": M.UP}, lst="L1"),
        pool_report("P1", P.UP, {"M1": M.DOWN, "M2": M.UP}, lst="L2"),
    ]
    if order == "down-first":
        reports.reverse()
    out = evaluate(shared_lb(), heartbeat({"L1": L.OPEN, "L2": L.OPEN}, reports))
    assert changes(out) == {"M1": c.ERROR, "P1": c.DEGRADED, "LB1": c.DEGRADED}


def test_R11_shared_pool_member_reported_by_one_backend_only_is_not_missing():
    reports = [
        pool_report("P1", P.UP, {"M1": M.UP}, lst="L1"),
        pool_report("P1", P.UP, {"M2": M.UP}, lst="L2"),
    ]
    out = evaluate(shared_lb(), heartbeat({"L1": L.OPEN, "L2": L.OPEN}, reports))
    assert changes(out) == {}


def test_R11_shared_pool_agreeing_reports_change_nothing():
    reports = [pool_report("P1", lst="L1"), pool_report("P1", lst="L2")]
    out = evaluate(shared_lb(), heartbeat({"L1": L.OPEN, "L2": L.OPEN}, reports))
    assert out == StatusOutcome(load_balancer_id=uid("LB1"), healthy=True)


# --- members -----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["UP", "UP 1/3", "UP 2/3"])
def test_R12_member_up_and_transitional_up_is_online(raw):
    ch = with_member(member_state_from_haproxy(raw), current=c.ERROR)
    assert ch == {"M1": c.ONLINE}


@pytest.mark.parametrize("raw", ["DOWN", "DOWN 1/2"])
def test_R13_member_down_and_transitional_down_is_error(raw):
    ch = with_member(member_state_from_haproxy(raw))
    assert ch == {"M1": c.ERROR, "P1": c.DEGRADED, "LB1": c.DEGRADED}


@pytest.mark.parametrize(("raw", "weight"), [("DRAIN", None), ("UP", 0), ("DRAIN (agent)", 1)])
def test_R14_member_drain_or_up_with_weight_0_is_draining(raw, weight):
    ch = with_member(member_state_from_haproxy(raw, weight))
    assert ch == {"M1": c.DRAINING}  # draining degrades nothing


def test_R14_up_with_nonzero_weight_is_online():
    ch = with_member(member_state_from_haproxy("UP", 1), current=c.DRAINING)
    assert ch == {"M1": c.ONLINE}


@pytest.mark.parametrize("raw", ["MAINT", "MAINT(via)", "MAINT (via b1/s1)"])
def test_R15_member_maint_is_offline(raw):
    ch = with_member(member_state_from_haproxy(raw))
    assert ch == {"M1": c.OFFLINE}


def test_R16_member_no_check_is_no_monitor():
    ch = with_member(member_state_from_haproxy("no check"))
    assert ch == {"M1": c.NO_MONITOR}


@pytest.mark.parametrize(
    ("current", "expected"),
    [(c.ONLINE, {"M1": c.OFFLINE}), (c.ERROR, {"M1": c.OFFLINE}), (c.NO_MONITOR, {})],
)
def test_R17_member_missing_from_a_reported_pool_is_offline_unless_no_monitor(current, expected):
    lb = topology(pools=(pool("P1", member("M1", current), member("M2")),))
    out = evaluate(lb, heartbeat(pools=[pool_report("P1", members={"M2": M.UP})]))
    assert changes(out) == expected


@pytest.mark.parametrize("raw", ["NOLB", "RESTARTING", "something new"])
def test_R18_other_member_states_leave_it_unchanged(raw):
    ch = with_member(member_state_from_haproxy(raw), current=c.ERROR)
    assert ch == {}


# --- the load balancer -------------------------------------------------------


def test_R19_lb_starts_online():
    out = evaluate(topology(status=c.ERROR), heartbeat())
    assert changes(out) == {"LB1": c.ONLINE}


def test_R19_disabled_lb_is_offline():
    out = evaluate(topology(enabled=False), heartbeat())
    assert changes(out) == {"LB1": c.OFFLINE}


def test_R20_pool_down_makes_the_lb_error_over_degraded():
    lb = topology(
        listeners=(listener("L1", default_pool="P1"), listener("L2", default_pool="P2")),
        pools=(pool("P1", member("M1"), member("M2")), pool("P2", member("M3", pool="P2"))),
    )
    hb = heartbeat(
        {"L1": L.FULL, "L2": L.OPEN},
        [
            pool_report("P1", P.UP, {"M1": M.DOWN, "M2": M.UP}),
            pool_report("P2", P.DOWN, {"M3": M.DOWN}, "L2"),
        ],
    )
    out = evaluate(lb, hb)
    assert out.load_balancer == c.ERROR
    assert changes(out) == {
        "LB1": c.ERROR,
        "L1": c.DEGRADED,
        "P1": c.DEGRADED,
        "M1": c.ERROR,
        "P2": c.ERROR,
        "M3": c.ERROR,
    }


def test_R20_pool_down_makes_even_a_disabled_lb_error():
    hb = heartbeat(pools=[pool_report("P1", P.DOWN)])
    out = evaluate(topology(enabled=False, status=c.OFFLINE), hb)
    assert out.load_balancer == c.ERROR


def test_R21_missing_listener_does_not_change_the_lb():
    lb = topology(listeners=(listener("L1", default_pool="P1"), listener("L2")))
    out = evaluate(lb, heartbeat())
    assert out.load_balancer is None
    assert changes(out) == {"L2": c.ERROR}


def test_R22_only_changes_are_returned():
    out = evaluate(topology(), heartbeat())
    assert out == StatusOutcome(load_balancer_id=uid("LB1"), healthy=True)
    assert not out.changed
    assert out.writes() == ()


def test_R22_writes_are_operating_status_rows_in_known_tables():
    lb = topology(
        status=c.OFFLINE,
        listeners=(listener("L1", c.OFFLINE),),
        pools=(pool("P1", member("M1", c.OFFLINE), member("M2"), status=c.OFFLINE),),
    )
    out = evaluate(lb, heartbeat())
    assert out.writes() == (
        StatusWrite("load_balancer", uid("LB1"), c.ONLINE),
        StatusWrite("listener", uid("L1"), c.ONLINE),
        StatusWrite("pool", uid("P1"), c.ONLINE),
        StatusWrite("member", uid("M1"), c.ONLINE),
    )
    assert {w.table for w in out.writes()} <= set(STATUS_TABLES)


# --- the listener-count rule (R23, R24) --------------------------------------


@pytest.mark.parametrize(
    ("listeners", "reported", "healthy"),
    [
        ((listener("L1"),), {"L1": L.OPEN}, True),
        ((listener("L1"),), {"L1": L.FULL}, True),
        ((listener("L1"), listener("L2")), {"L1": L.OPEN}, False),
        ((listener("L1"), listener("L2", enabled=False)), {"L1": L.OPEN}, True),
        ((listener("L1"),), {}, False),
        ((), {}, True),
        ((), {"L9": L.OPEN}, False),  # more listeners than the database has
    ],
)
def test_R23_healthy_when_reported_listeners_match_enabled_ones(listeners, reported, healthy):
    lb = topology(listeners=listeners)
    hb = heartbeat(reported)
    assert evaluate(lb, hb).healthy is healthy
    assert is_healthy(lb, hb) is healthy


def test_R23_a_listener_reported_twice_counts_once():
    hb = msgspec.structs.replace(heartbeat(), listeners=(report("L1"), report("L1", L.FULL)))
    out = evaluate(topology(), hb)
    assert out.healthy
    assert changes(out) == {"L1": c.DEGRADED, "LB1": c.DEGRADED}  # worst report wins


@pytest.mark.parametrize("provisioning", c.PENDING_STATUSES)
def test_R24_pending_lb_is_healthy_anyway_and_missing_listener_is_offline(provisioning):
    lb = topology(
        listeners=(listener("L1", default_pool="P1"), listener("L2")), provisioning=provisioning
    )
    out = evaluate(lb, heartbeat())
    assert out.healthy
    assert changes(out) == {"L2": c.OFFLINE}


def test_R24_disabled_lb_is_healthy_anyway():
    lb = topology(enabled=False, status=c.OFFLINE)
    out = evaluate(lb, heartbeat(listeners={}, pools=[]))
    assert out.healthy
    assert changes(out) == {"L1": c.OFFLINE, "P1": c.OFFLINE}


# --- objects the topology does not have (R25) --------------------------------


@pytest.mark.parametrize(
    "hb",
    [
        heartbeat({"L1": L.OPEN, "L9": L.OPEN}),
        heartbeat(pools=[pool_report("P1"), pool_report("P9", members={})]),
        heartbeat(pools=[pool_report("P1", members={"M1": M.UP, "M2": M.UP, "M9": M.DOWN})]),
        heartbeat(pools=[pool_report("P1", lst="L9")]),
    ],
    ids=["listener", "pool", "member", "pool-of-unknown-listener"],
)
def test_R25_unknown_objects_are_flagged_and_not_written(hb):
    out = evaluate(topology(), hb)
    assert out.names_unknown_objects
    assert all(name(w.id) in {"LB1", "L1", "P1", "M1", "M2"} for w in out.writes())
    assert "M9" not in changes(out) and "P9" not in changes(out)


def test_R25_member_of_another_known_pool_is_unknown_here_and_missing_there():
    lb = topology(
        pools=(pool("P1", member("M1"), member("M2")), pool("P2", member("M3", pool="P2")))
    )
    hb = heartbeat(
        pools=[
            pool_report("P1", members={"M1": M.UP, "M2": M.UP, "M3": M.UP}),
            pool_report("P2", members={}),
        ]
    )
    out = evaluate(lb, hb)
    assert out.names_unknown_objects
    assert changes(out) == {"M3": c.OFFLINE}


def test_R25_known_objects_only_are_not_flagged():
    assert not evaluate(topology(), heartbeat()).names_unknown_objects


# --- amphorae outside a load balancer (R26, R27) -----------------------------


def test_R26_unknown_amphora_writes_nothing_and_is_not_healthy():
    out = evaluate_amphora(None, heartbeat())
    assert out == StatusOutcome()
    assert out.writes() == () and not out.healthy


def test_R26_topology_of_another_amphora_is_refused():
    amp = AmphoraTopology(uid("A2"), c.ALLOCATED, c.STANDALONE, topology())
    with pytest.raises(ValueError, match="amphora"):
        evaluate_amphora(amp, heartbeat(amphora="A1"))


@pytest.mark.parametrize(("listeners", "healthy"), [({}, True), ({"L1": L.OPEN}, False)])
def test_R27_amphora_not_allocated_writes_nothing(listeners, healthy):
    amp = AmphoraTopology(uid("A1"), c.READY, None, None)
    out = evaluate_amphora(amp, heartbeat(listeners, pools=[]))
    assert out.writes() == ()
    assert out.healthy is healthy


@pytest.mark.parametrize("deleted", ["amphora", "load_balancer"])
def test_R27_deleted_amphora_or_lb_writes_nothing_and_is_not_healthy(deleted):
    lb = topology(provisioning=c.DELETED if deleted == "load_balancer" else c.ACTIVE)
    status = c.DELETED if deleted == "amphora" else c.ALLOCATED
    out = evaluate_amphora(AmphoraTopology(uid("A1"), status, c.STANDALONE, lb), heartbeat())
    assert out == StatusOutcome()


def test_R27_allocated_amphora_is_evaluated_against_its_lb():
    lb = topology(status=c.ERROR)
    out = evaluate_amphora(AmphoraTopology(uid("A1"), c.ALLOCATED, c.STANDALONE, lb), heartbeat())
    assert out == evaluate(lb, heartbeat())
    assert changes(out) == {"LB1": c.ONLINE}


# --- ACTIVE_STANDBY: both amphorae report (R28) ------------------------------


def test_R28_active_standby_agreeing_second_heartbeat_changes_nothing():
    lb = topology(status=c.OFFLINE, pools=(pool("P1", member("M1", c.ERROR), member("M2")),))
    master, backup = heartbeat(amphora="A1"), heartbeat(amphora="A2")
    first = evaluate(lb, master)
    assert changes(first) == {"LB1": c.ONLINE, "M1": c.ONLINE}
    second = evaluate(apply(lb, first), backup)
    assert not second.changed and second.healthy


def test_R28_active_standby_disagreeing_last_writer_wins():
    lb = topology()
    master = heartbeat(amphora="A1")
    backup = heartbeat(pools=[pool_report("P1", members={"M1": M.DOWN, "M2": M.UP})], amphora="A2")
    after_master = apply(lb, evaluate(lb, master))
    after_backup = apply(after_master, evaluate(after_master, backup))
    assert after_backup.pools[0].members[0].operating_status == c.ERROR
    assert after_backup.operating_status == c.DEGRADED
    again = evaluate(after_backup, master)
    assert changes(again) == {"M1": c.ONLINE, "P1": c.ONLINE, "LB1": c.ONLINE}


# --- apply -------------------------------------------------------------------


def test_apply_then_evaluate_again_changes_nothing():
    lb = topology(
        status=c.OFFLINE,
        listeners=(listener("L1", c.ERROR), listener("L2")),
        pools=(pool("P1", member("M1", c.OFFLINE), member("M2")), pool("P2")),
    )
    hb = heartbeat(pools=[pool_report("P1", members={"M1": M.DOWN})])
    out = evaluate(lb, hb)
    assert out.changed
    assert not evaluate(apply(lb, out), hb).changed


def test_apply_of_no_change_returns_the_same_topology():
    lb = topology()
    assert apply(lb, evaluate(lb, heartbeat())) is lb


def test_apply_refuses_an_outcome_of_another_lb():
    other = dataclasses.replace(topology(), id=uid("LB2"))
    with pytest.raises(ValueError, match="load balancer"):
        apply(topology(), evaluate(other, heartbeat()))

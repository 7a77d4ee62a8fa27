"""Invariants of the status rules over random topologies and heartbeats."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from healthmgr.rules import constants as c
from healthmgr.rules.status import StatusOutcome, apply, evaluate
from healthmgr.rules.topology import (
    ListenerTopology,
    LoadBalancerTopology,
    MemberTopology,
    PoolTopology,
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

# Ids: kind byte + load-balancer byte + index, so two topologies never share one.


def oid(kind: str, lb: int, i: int) -> Id:
    return kind.encode() + bytes([lb, i]) + bytes(13)


operating = st.sampled_from(c.OPERATING_STATUSES)
provisioning = st.sampled_from(c.PROVISIONING_STATUSES)


@st.composite
def topologies(draw, lb_no: int = 1) -> LoadBalancerTopology:
    n_pools = draw(st.integers(0, 4))
    pools = []
    member_no = 0
    for p in range(n_pools):
        members = []
        for _ in range(draw(st.integers(0, 4))):
            members.append(
                MemberTopology(
                    oid("M", lb_no, member_no),
                    oid("P", lb_no, p),
                    draw(st.booleans()),
                    draw(operating),
                )
            )
            member_no += 1
        pools.append(
            PoolTopology(oid("P", lb_no, p), draw(st.booleans()), draw(operating), tuple(members))
        )
    listeners = tuple(
        ListenerTopology(
            oid("L", lb_no, i),
            draw(st.booleans()),
            draw(operating),
            draw(st.sampled_from([None, *(p.id for p in pools)])),
        )
        for i in range(draw(st.integers(0, 4)))
    )
    return LoadBalancerTopology(
        oid("B", lb_no, 0),
        draw(st.booleans()),
        draw(provisioning),
        draw(operating),
        listeners,
        tuple(pools),
    )


def some(draw, items, unique: bool = True, max_size: int | None = None) -> list:
    """A drawn sub-list of ``items`` (empty when there are none)."""
    if not items:
        return []
    return draw(st.lists(st.sampled_from(items), unique=unique, max_size=max_size))


@st.composite
def heartbeats(
    draw, lb: LoadBalancerTopology, stranger: LoadBalancerTopology | None = None
) -> Heartbeat:
    """A heartbeat about ``lb``; it may also name objects of ``stranger``."""
    listener_ids = [x.id for x in lb.listeners]
    pools = list(lb.pools)
    if stranger is not None and draw(st.booleans()):
        listener_ids += [x.id for x in stranger.listeners]
        pools += list(stranger.pools)
    listeners = tuple(
        ListenerReport(lid, draw(st.sampled_from(ListenerState)), 0, 0, 0, 0, 0)
        for lid in some(draw, listener_ids)
    )
    reports = []
    # A pool may be reported several times (one HAProxy backend per listener).
    for pool in some(draw, pools, unique=False, max_size=6):
        members = tuple(
            MemberReport(m.id, draw(st.sampled_from(MemberState))) for m in some(draw, pool.members)
        )
        listener_id = draw(st.sampled_from([None, *listener_ids]))
        reports.append(PoolReport(pool.id, listener_id, draw(st.sampled_from(PoolState)), members))
    return Heartbeat(oid("A", 0, 0), 1, 0, 10_000, 1, listeners, tuple(reports))


@st.composite
def cases(draw, with_stranger: bool = False):
    lb = draw(topologies(1))
    stranger = draw(topologies(2)) if with_stranger else None
    return lb, draw(heartbeats(lb, stranger))


def objects(lb: LoadBalancerTopology) -> dict[Id, str]:
    """Every object id of the topology -> its operating status."""
    out = {lb.id: lb.operating_status}
    out.update((x.id, x.operating_status) for x in lb.listeners)
    for pool in lb.pools:
        out[pool.id] = pool.operating_status
        out.update((m.id, m.operating_status) for m in pool.members)
    return out


def final_lb_status(lb: LoadBalancerTopology, out: StatusOutcome) -> str:
    return out.load_balancer or lb.operating_status


@given(cases())
def test_lb_is_error_exactly_when_a_reported_pool_is_down(case):
    lb, hb = case
    known = {p.id for p in lb.pools}
    down = any(r.status is PoolState.DOWN and r.id in known for r in hb.pools)
    assert (final_lb_status(lb, evaluate(lb, hb)) == c.ERROR) is down


@given(cases())
def test_lb_status_is_one_of_base_degraded_error(case):
    lb, hb = case
    status = final_lb_status(lb, evaluate(lb, hb))
    allowed = {c.ONLINE, c.DEGRADED, c.ERROR} if lb.enabled else {c.OFFLINE, c.ERROR}
    assert status in allowed


@given(cases(with_stranger=True))
def test_outcome_only_names_objects_of_the_given_lb(case):
    lb, hb = case
    out = evaluate(lb, hb)
    mine = objects(lb)
    assert out.load_balancer_id == lb.id
    assert all(w.id in mine for w in out.writes())


@given(cases(with_stranger=True))
def test_outcome_only_contains_changes_each_once(case):
    lb, hb = case
    out = evaluate(lb, hb)
    current = objects(lb)
    ids = [w.id for w in out.writes()]
    assert len(ids) == len(set(ids))
    for w in out.writes():
        assert w.operating_status in c.OPERATING_STATUSES
        assert w.operating_status != current[w.id]


@given(cases(with_stranger=True))
def test_applying_the_outcome_makes_the_same_heartbeat_a_no_op(case):
    lb, hb = case
    out = evaluate(lb, hb)
    after = apply(lb, out)
    again = evaluate(after, hb)
    assert not again.changed
    assert (again.healthy, again.names_unknown_objects) == (out.healthy, out.names_unknown_objects)
    # apply changed exactly what the outcome said
    before, now = objects(lb), objects(after)
    written = {w.id: w.operating_status for w in out.writes()}
    assert now == {**before, **written}


@given(cases(), st.randoms(use_true_random=False))
def test_order_of_reports_does_not_matter(case, rnd):
    lb, hb = case
    pools = [
        msgspec.structs.replace(p, members=tuple(rnd.sample(p.members, len(p.members))))
        for p in hb.pools
    ]
    rnd.shuffle(pools)
    listeners = list(hb.listeners)
    rnd.shuffle(listeners)
    shuffled = msgspec.structs.replace(hb, pools=tuple(pools), listeners=tuple(listeners))
    assert evaluate(lb, shuffled) == evaluate(lb, hb)


@given(cases())
def test_members_of_unreported_pools_never_change(case):
    lb, hb = case
    reported = {r.id for r in hb.pools}
    untouched = {m.id for p in lb.pools if p.id not in reported for m in p.members}
    assert not untouched & {mid for mid, _ in evaluate(lb, hb).members}


@given(cases())
def test_healthy_follows_the_listener_count_rule(case):
    lb, hb = case
    relaxed = lb.provisioning_status.startswith("PENDING_") or not lb.enabled
    expected = len({x.id for x in hb.listeners}) == sum(x.enabled for x in lb.listeners)
    assert evaluate(lb, hb).healthy is (relaxed or expected)


@given(cases(with_stranger=True))
def test_unknown_flag_is_set_exactly_when_the_heartbeat_names_a_stranger(case):
    lb, hb = case
    mine = objects(lb)
    members_of = {p.id: {m.id for m in p.members} for p in lb.pools}
    named = {x.id for x in hb.listeners} | {r.id for r in hb.pools}
    named |= {r.listener_id for r in hb.pools if r.listener_id is not None}
    stray_member = any(
        m.id not in members_of[r.id] for r in hb.pools if r.id in members_of for m in r.members
    )
    assert evaluate(lb, hb).names_unknown_objects is (bool(named - mine.keys()) or stray_member)


@given(cases())
def test_missing_listeners_are_error_only_on_an_active_enabled_lb(case):
    lb, hb = case
    reported = {x.id for x in hb.listeners}
    out = dict(evaluate(lb, hb).listeners)
    for x in lb.listeners:
        if x.id in reported:
            continue
        final = out.get(x.id, x.operating_status)
        error = x.enabled and lb.enabled and lb.provisioning_status == c.ACTIVE
        assert final == (c.ERROR if error else c.OFFLINE)

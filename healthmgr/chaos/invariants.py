"""The invariants a scenario checks: pure functions of what the database and the managers hold.

Each returns a :class:`Check`: pass or fail, the figure measured, the bound
it was held to, and, when it fails, which amphorae and why (the first few).
``passed`` is None when the figure could not be measured (no metrics endpoint,
say): shown as ``n/a``, never a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from healthmgr.chaos.fleet import AmphoraTopo
from healthmgr.rules import constants as C
from healthmgr.wire.ids import id_str
from healthmgr.wire.values import MemberState

SHOWN = 3  # amphorae named in a failing check's detail

FALSE_FAILOVERS = "0 false failovers"
FAILED_OVER_ONCE = "dead failed over exactly once, in time"
STATS_EXACT = "statistics exact"
STATUSES_NEWEST = "statuses = newest report"
REFUSED_COUNTED = "no row refused without a metric"
MEMORY_BOUNDED = "bounded daemon memory"


@dataclass(frozen=True, slots=True)
class Check:
    invariant: str
    passed: bool | None
    figure: str
    bound: str
    detail: str = ""

    @property
    def result(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


@dataclass(frozen=True, slots=True)
class Request:
    """A failover request row, as the checks need it."""

    amphora_id: str
    state: str
    requested_by: str
    requested_at: dt.datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Dead:
    """An amphora that died and stayed dead: when its last heartbeat landed."""

    amphora_id: str
    last_update: dt.datetime | None


def _named(ids: Iterable[str]) -> str:
    ids = list(ids)
    more = f" (+{len(ids) - SHOWN} more)" if len(ids) > SHOWN else ""
    return ", ".join(ids[:SHOWN]) + more


def effective(requests: Iterable[Request]) -> list[Request]:
    """Requests that failed an amphora over: an ABANDONED one did not (its outcome was
    unknown at shutdown, busy was cleared and the amphora is claimed again if still dead)."""
    return [r for r in requests if r.state != C.FAILOVER_ABANDONED]


def no_false_failovers(requests: Mapping[str, Sequence[Request]], alive: Iterable[str]) -> Check:
    """No amphora that kept beating (or came back in time) has a failover request."""
    alive = list(alive)
    false = [a for a in alive if requests.get(a)]
    return Check(
        FALSE_FAILOVERS,
        not false,
        f"{len(false)} of {len(alive)} live",
        "0",
        f"failed over: {_named(false)}" if false else "",
    )


def failed_over_once(
    requests: Mapping[str, Sequence[Request]],
    dead: Sequence[Dead],
    allowed: Callable[[Dead, Request], float],
) -> Check:
    """Every dead amphora has exactly one effective request, made in time.

    ``allowed(dead, request)`` is the latest acceptable latency in seconds
    (``requested_at - last_update``) for that request: the bound, later for a
    manager still in its grace period after an impairment or a start.
    """
    if not dead:
        return Check(FAILED_OVER_ONCE, True, "no dead amphora", "-")
    missing, twice, late = [], [], []
    timed: list[tuple[float, float]] = []  # (latency, its bound) per dead amphora
    for d in dead:
        done = effective(requests.get(d.amphora_id, ()))
        if not done:
            missing.append(d.amphora_id)
            continue
        if len(done) > 1:
            twice.append(f"{d.amphora_id} x{len(done)}")
        first = min(done, key=lambda r: r.requested_at)
        if d.last_update is None:
            continue
        latency = (first.requested_at - d.last_update).total_seconds()
        bound = allowed(d, first)
        timed.append((latency, bound))
        if latency > bound:
            late.append(f"{d.amphora_id} after {latency:.2f} s > {bound:.2f} s")
    n = len(dead)
    problems = (
        ([f"never: {_named(missing)}"] if missing else [])
        + ([f"twice: {_named(twice)}"] if twice else [])
        + ([f"late: {_named(late)}"] if late else [])
    )
    # A few: each latency and its bound; many: the one nearest its bound.
    shown = sorted(timed) if len(timed) <= SHOWN else [max(timed, key=lambda lb: lb[0] - lb[1])]
    figure = f"{n - len(missing)}/{n} once" + (
        "; " + ", ".join(f"{lat:.2f} s" for lat, _ in shown) if shown else ""
    )
    bound = "<= " + ", ".join(f"{b:.2f} s" for _, b in shown) if shown else "-"
    return Check(FAILED_OVER_ONCE, not problems, figure, bound, "; ".join(problems))


def stats_exact(
    rows: Mapping[str, Sequence[tuple[int, int, int, int, int]]],
    amphorae: Iterable[str],
    expected: Callable[[int], tuple[int, int, int, int]],
    *,
    newest_at_least: Mapping[str, int] | None = None,
) -> Check:
    """Each amphora's listener totals equal what it sent up to the newest sequence recorded.

    ``rows[amphora]``: ``(last_seq, bytes_in, bytes_out, total_connections,
    request_errors)`` per listener; ``newest_at_least[amphora]`` a sequence the
    database must have reached (the fleet's last clean round), so that a manager
    that dropped everything cannot pass.
    """
    amphorae = list(amphorae)
    wrong, behind, missing = [], [], []
    for a in amphorae:
        listeners = rows.get(a)
        if not listeners:
            missing.append(a)
            continue
        for seq, *totals in listeners:
            if tuple(totals) != expected(seq):
                wrong.append(f"{a} at seq {seq}: {tuple(totals)} != {expected(seq)}")
                break
            if newest_at_least and seq < newest_at_least.get(a, 0):
                behind.append(f"{a} at seq {seq} < {newest_at_least[a]}")
                break
    problems = (
        ([f"wrong: {_named(wrong)}"] if wrong else [])
        + ([f"no row: {_named(missing)}"] if missing else [])
        + ([f"behind: {_named(behind)}"] if behind else [])
    )
    bad = len(wrong) + len(missing) + len(behind)
    return Check(
        STATS_EXACT,
        not problems,
        f"{len(amphorae) - bad}/{len(amphorae)} exact",
        "all",
        "; ".join(problems),
    )


MEMBER_STATUS = {
    MemberState.UP: C.ONLINE,
    MemberState.DOWN: C.ERROR,
    MemberState.DRAIN: C.DRAINING,
    MemberState.MAINT: C.OFFLINE,
    MemberState.NO_CHECK: C.NO_MONITOR,
}


def expected_statuses(
    amphora: AmphoraTopo, members: Mapping[bytes, MemberState], pools_down: Collection[bytes] = ()
) -> dict[str, str]:
    """Every object's operating status when the amphora reports its members in ``members``
    (absent: UP), every listener OPEN, and the pools in ``pools_down`` DOWN (others UP):
    docs/status-rules.md, the rules as the API's user sees them."""
    out: dict[str, str] = {}
    degraded = error = False
    for listener in amphora.listeners:
        out[id_str(listener.id)] = C.ONLINE
        for pool in listener.pools:
            statuses = [MEMBER_STATUS[members.get(m, MemberState.UP)] for m in pool.members]
            out.update(zip(map(id_str, pool.members), statuses, strict=True))
            errors = C.ERROR in statuses
            down = pool.id in pools_down
            out[id_str(pool.id)] = C.ERROR if down else C.DEGRADED if errors else C.ONLINE
            error |= down
            degraded |= errors
    lb = C.ERROR if error else C.DEGRADED if degraded else C.ONLINE
    out[id_str(amphora.load_balancer_id)] = lb
    return out


def statuses_newest(
    found: Mapping[str, Mapping[str, str]],
    expected: Mapping[str, Mapping[str, str]],
) -> Check:
    """Every object's operating status is what the amphora's newest recorded report says.

    ``found[amphora]`` and ``expected[amphora]``: ``{object id: status}``.
    """
    wrong = []
    for amphora, want in expected.items():
        got = found.get(amphora, {})
        diff = [f"{k} {got.get(k)} != {v}" for k, v in want.items() if got.get(k) != v]
        if diff:
            wrong.append(f"{amphora}: {diff[0]}")
    n = len(expected)
    return Check(
        STATUSES_NEWEST,
        not wrong,
        f"{n - len(wrong)}/{n} amphorae",
        "all",
        f"differ: {_named(wrong)}" if wrong else "",
    )


def refused_counted(rejected: float | None, refused_rows: int) -> Check:
    """Rows the database refused (statistics not written) are at least those the metric counts.

    ``refused_rows``: rows of the scenario the database does not hold as sent
    (expected for a poisoned amphora); ``rejected``: the growth of
    ``healthmgr_rows_rejected_total`` over the scenario, all managers.
    """
    if rejected is None:
        if refused_rows == 0:
            return Check(REFUSED_COUNTED, None, "0 refused; no metrics", ">= 0")
        return Check(
            REFUSED_COUNTED,
            None,
            f"{refused_rows} refused; no metrics to check",
            f">= {refused_rows}",
        )
    ok = rejected >= refused_rows
    return Check(
        REFUSED_COUNTED,
        ok,
        f"{refused_rows} refused, {rejected:g} counted",
        f"counted >= {refused_rows}",
        "" if ok else "rows left out with no healthmgr_rows_rejected_total",
    )


def memory_bounded(
    before: Mapping[str, int | None], peak: Mapping[str, int | None], limit_mib: float
) -> Check:
    """No manager's resident memory grew more than ``limit_mib`` during the scenario."""
    growth = {
        m: (peak[m] or 0) - (before.get(m) or 0)
        for m in peak
        if peak[m] is not None and before.get(m) is not None
    }
    if not growth:
        return Check(
            MEMORY_BOUNDED, None, "not measured (no pid, no metrics)", f"+{limit_mib:g} MiB"
        )
    worst = max(growth, key=lambda m: growth[m])
    mib = growth[worst] / 2**20
    peak_mib = (peak[worst] or 0) / 2**20
    return Check(
        MEMORY_BOUNDED,
        mib <= limit_mib,
        f"+{mib:.1f} MiB (peak {peak_mib:.0f} MiB)",
        f"+{limit_mib:g} MiB",
        "" if mib <= limit_mib else f"manager {worst}",
    )


def simple(invariant: str, passed: bool, figure: str, bound: str, detail: str = "") -> Check:
    """A scenario's own invariant (the breaker held, forged heartbeats counted, ...)."""
    return Check(invariant, passed, figure, bound, "" if passed else detail)

"""Statuses and statistics identical to Octavia's, proven with Octavia's own code.

Two MariaDB databases get Octavia 19.0.0's schema from its own migrations and
the same generated load balancers. Octavia's ``UpdateHealthDb.update_health``
and ``update_stats`` (run in .venv-octavia by tests/octavia/driver.py) process
heartbeats built with its agent's ``status_message.wrap_envelope`` on one;
healthmgr processes the same datagrams on the other (its Octavia decoder, the
view and the store in the octavia schema, a flush per round as the daemon's
writer would). The two databases must then hold the same statuses, health
rows and statistics, except where docs/status-rules.md documents a deviation
(each difference is matched to its documented cause below).
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from healthmgr.db.store import Store
from healthmgr.manager.decoder import Decoder
from healthmgr.manager.view import Applied, Arrival, View
from healthmgr.wire.ids import id_bytes
from healthmgr.wire.keys import Keyring
from tests.octavia import cases as gen

pytestmark = pytest.mark.mysql

KEY = "octavia-heartbeat-key"
DRIVER = Path(__file__).with_name("driver.py")
CASES_PER_BATCH = 60
ROUNDS = 4
SEEDS = (1, 2, 3)


def run_octavia(python: Path, url: str, rounds: list[list[dict]]) -> list[list[bytes]]:
    job = json.dumps({"db": url, "key": KEY, "rounds": rounds})
    done = subprocess.run(
        [str(python), str(DRIVER)],
        input=job,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [[bytes.fromhex(d) for d in r] for r in json.loads(done.stdout)["datagrams"]]


def run_healthmgr(url: str, datagrams: list[list[bytes]], amphorae: list[str]) -> None:
    """The daemon's path without its tasks: decode, apply to the view, flush per round."""
    engine = make_engine(url)
    store = Store(engine, schema="octavia")
    decoder = Decoder(
        Keyring([], None), octavia_key=KEY.encode(), max_age_ms=10**9, max_future_ms=10**9
    )
    view = View(ttl=1e9, refresh_min_interval=0.0, late_after=1e9)
    ids = [id_bytes(a) for a in amphorae]
    view.install(ids, store.load_topologies(ids).found, 0.0)
    wall_ms = 1_800_000_000_000
    try:
        for round_ in datagrams:
            for datagram in round_:
                wall_ms += 1  # arrival order is the order Octavia processed them in
                hb, newest = decoder.decode(datagram, wall_ms)
                result = view.apply(Arrival(hb, 0.0, wall_ms, newest), 0.0)
                assert result is not Applied.QUEUED
            batch, _ = view.pending.take()
            flushed = store.flush(batch)
            assert not flushed.refused, flushed.refused
            # What the refresher does after a flush: re-read what the view asked for.
            wanted = view.wanted(10_000)
            view.install(wanted, store.load_topologies(wanted).found, 0.0)
    finally:
        engine.dispose()


def documented(
    table: str, key: object, ours: tuple, theirs: tuple, context: dict[str, object]
) -> str | None:
    """The documented deviation that explains a difference, or None."""
    case = context["case_of"].get(key)  # type: ignore[attr-defined]
    if (
        case is not None
        and case.topology == "ACTIVE_STANDBY"
        and ours[0] == theirs[0]
        and ours[2:] == theirs[2:]
    ):
        return "status-rules.md deviation 8: the pair's writes coalesced in one flush"
    if table == "listener":
        lb = context["lb_of_listener"][key]  # type: ignore[index]
        if (
            not lb.enabled
            and lb.provisioning_status == "ACTIVE"
            and ours[0] == "OFFLINE"
            and theirs[0] == "ERROR"
        ):
            return "status-rules.md deviation 2: missing listener of a disabled load balancer"
    if table == "member" and key in context["mapped_differently"]:  # type: ignore[operator]
        return "octavia-compat.md: MAINT (via ...)/DRAIN (agent) mapped, not ignored"
    if table == "pool" and ours[0] == "OFFLINE" and key in context["v1_unevaluated"]:  # type: ignore[operator]
        return "status-rules.md deviation 7: v1 heartbeat naming no listener"
    return None


def _context(cases: list[gen.Case], rounds: list[list[dict]]) -> dict[str, object]:
    lb_of_listener = {lst.id: c for c in cases for lst in c.listeners}
    case_of: dict[str, gen.Case] = {}
    for c in cases:
        case_of[c.lb_id] = c
        case_of.update({lst.id: c for lst in c.listeners})
        case_of.update({p.id: c for p in c.pools})
        case_of.update({m.id: c for p in c.pools for m in p.members})
    case_of_amphora = {a: c for c in cases for a in c.amphorae}
    mapped, v1_unevaluated = set(), set()
    for messages in rounds:
        for msg in messages:
            case = case_of_amphora[msg["id"]]
            if "ver" not in msg and not msg["listeners"]:
                v1_unevaluated |= {p.id for p in case.pools}
            pools = dict(msg.get("pools", {}))
            for body in msg["listeners"].values():
                pools.update(body.get("pools", {}))
            for pool in pools.values():
                mapped |= {m for m, s in pool["members"].items() if s in gen.MAPPED_DIFFERENTLY}
    return {
        "lb_of_listener": lb_of_listener,
        "mapped_differently": mapped,
        "case_of": case_of,
        "v1_unevaluated": v1_unevaluated,
    }


def _batches(seeds: tuple[int, ...]) -> tuple[list[gen.Case], list[list[dict]]]:
    """The cases and rounds of each seed's batch, side by side: round n holds every
    seed's round n (each in its own shuffled order), so each seed's load balancers see
    the same heartbeats in the same order as in a run of their own (they share nothing)."""
    cases: list[gen.Case] = []
    rounds: list[list[dict]] = [[] for _ in range(ROUNDS)]
    for seed in seeds:
        rng = random.Random(seed)
        batch = [gen.generate(rng) for _ in range(CASES_PER_BATCH)]
        cases += batch
        for n, messages in enumerate(gen.rounds(batch, ROUNDS, rng)):
            rounds[n] += messages
    return cases, rounds


# The three seeds' batches in one pair of databases and one run of Octavia's code: the
# same cases as three runs, without two more copies of Octavia's schema and start-ups of
# its interpreter (about 40 s of the default suite).
def test_statuses_and_statistics_equal_octavias_own_update_health(
    octavia_python: Path, octavia_database: Callable[..., str]
) -> None:
    cases, rounds = _batches(SEEDS)
    theirs_url, ours_url = octavia_database(healthmgr_tables=False), octavia_database()
    snapshots = []
    for url in (theirs_url, ours_url):
        engine = make_engine(url)
        with engine.begin() as conn:
            gen.insert(conn, cases)
        engine.dispose()

    datagrams = run_octavia(octavia_python, theirs_url, rounds)
    run_healthmgr(ours_url, datagrams, [a for c in cases for a in c.amphorae])

    for url in (theirs_url, ours_url):
        engine = make_engine(url)
        with engine.connect() as conn:
            snapshots.append(gen.snapshot(conn))
        engine.dispose()
    theirs, ours = snapshots
    context = _context(cases, rounds)
    unexplained, explained = [], []
    for table in theirs:
        assert set(ours[table]) == set(theirs[table]), f"{table}: different rows"
        for key, value in theirs[table].items():
            if ours[table][key] == value:
                continue
            why = documented(table, key, ours[table][key], value, context)
            line = f"{table} {key}: healthmgr {ours[table][key]}, Octavia {value}"
            (explained if why else unexplained).append(f"{line} ({why})" if why else line)
    assert not unexplained, "\n".join(unexplained[:30])
    # The generated cases exercise the rules: statuses really moved, on both sides.
    moved = sum(1 for t in ("listener", "pool", "member") for v in theirs[t].values() if v[1])
    assert moved > 50 * len(SEEDS)
    assert len(theirs["listener_statistics"]) > 50 * len(SEEDS)


def test_the_differential_test_sees_a_difference(
    octavia_python: Path, octavia_database: Callable[..., str]
) -> None:
    """The comparison can fail: a member Octavia marks ERROR differs if healthmgr's
    database says otherwise."""
    rng = random.Random(7)
    cases = [gen.generate(rng) for _ in range(10)]
    rounds = gen.rounds(cases, 1, rng)
    url = octavia_database(healthmgr_tables=False)
    engine = make_engine(url)
    with engine.begin() as conn:
        gen.insert(conn, cases)
        before = gen.snapshot(conn)
    run_octavia(octavia_python, url, rounds)
    with engine.connect() as conn:
        after = gen.snapshot(conn)
        assert conn.execute(sa.text("SELECT COUNT(*) FROM amphora_health")).scalar_one() > 0
    engine.dispose()
    assert before != after

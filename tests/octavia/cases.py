"""Generated load balancers and the heartbeats Octavia's agent would send about them.

A case is one load balancer (SINGLE: one amphora; ACTIVE_STANDBY: two) with
random listeners, pools and members and random statuses in the database, and
rounds of heartbeats: each round, every amphora sends one message, in
Octavia's JSON (version 1: pools nested in listeners, no ``ver``; 2 and 3:
top-level ``pools``; 3: counters are deltas). Each amphora keeps one
version (an agent does not change format between heartbeats), absolute
counters never go backwards (a HAProxy restart is where healthmgr's stricter
statistics differ: documented), and each pool is reported under one listener
(a pool shared by listeners is a documented deviation, R11).

Rows go into Octavia's own tables with every column Octavia's schema requires
(lookup-table values included), as its API would leave them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

OPERATING = ("ONLINE", "DEGRADED", "ERROR", "NO_MONITOR", "OFFLINE", "DRAINING")
LB_PROVISIONING = ("ACTIVE",) * 7 + ("PENDING_UPDATE", "PENDING_CREATE", "ERROR")
LISTENER_STATES = ("OPEN",) * 7 + ("FULL", "FULL", "STOP", "DOWN")
POOL_STATES = ("UP",) * 6 + ("DOWN", "DOWN", "MAINT")
# What HAProxy puts in a server's status, as Octavia's agent forwards it.
# "MAINT (via ...)" and "DRAIN (agent)" are mapped by healthmgr and left
# unchanged by Octavia: a documented deviation (docs/octavia-compat.md).
MEMBER_STATES = (
    "UP",
    "UP",
    "UP",
    "UP 1/3",
    "DOWN",
    "DOWN",
    "DOWN 1/2",
    "DRAIN",
    "MAINT",
    "no check",
    "NOLB",
    "RESTARTING",
    "MAINT (via pool/srv)",
    "DRAIN (agent)",
)
MAPPED_DIFFERENTLY = ("MAINT (via pool/srv)", "DRAIN (agent)")


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class Member:
    id: str
    operating_status: str
    enabled: bool


@dataclass
class Pool:
    id: str
    operating_status: str
    members: list[Member]
    listener: str | None = None  # the listener it is reported under


@dataclass
class Listener:
    id: str
    operating_status: str
    enabled: bool
    default_pool: str | None = None


@dataclass
class Case:
    lb_id: str
    enabled: bool
    provisioning_status: str
    operating_status: str
    topology: str
    amphorae: list[str]
    listeners: list[Listener]
    pools: list[Pool]
    versions: dict[str, int] = field(default_factory=dict)  # amphora -> message version
    counters: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def generate(rng: random.Random) -> Case:
    pools = []
    for _ in range(rng.randint(0, 3)):
        members = [
            Member(_id(rng), rng.choice(OPERATING), rng.random() < 0.9)
            for _ in range(rng.randint(0, 4))
        ]
        pools.append(Pool(_id(rng), rng.choice(OPERATING), members))
    listeners = []
    for _ in range(rng.randint(0, 3)):
        listeners.append(Listener(_id(rng), rng.choice(OPERATING), rng.random() < 0.85))
    for pool in pools:
        if listeners and rng.random() < 0.9:
            owner = rng.choice(listeners)
            pool.listener = owner.id
            if owner.default_pool is None:
                owner.default_pool = pool.id
    topology = "ACTIVE_STANDBY" if rng.random() < 0.25 else "SINGLE"
    amphorae = [_id(rng) for _ in range(2 if topology == "ACTIVE_STANDBY" else 1)]
    case = Case(
        lb_id=_id(rng),
        enabled=rng.random() < 0.85,
        provisioning_status=rng.choice(LB_PROVISIONING),
        operating_status=rng.choice(OPERATING),
        topology=topology,
        amphorae=amphorae,
        listeners=listeners,
        pools=pools,
    )
    case.versions = {a: rng.choice((1, 2, 3)) for a in amphorae}
    return case


def message(case: Case, amphora: str, seq: int, rng: random.Random) -> dict[str, Any]:
    """One heartbeat of ``amphora`` (Octavia's agent's JSON, before wrap_envelope)."""
    version = case.versions[amphora]
    listeners: dict[str, Any] = {}
    for lst in case.listeners:
        if rng.random() < (0.85 if lst.enabled else 0.1):
            listeners[lst.id] = {
                "status": rng.choice(LISTENER_STATES),
                "stats": _stats(case, amphora, lst.id, version, rng),
            }
    pools: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for pool in case.pools:
        if pool.listener is None or rng.random() >= 0.85:
            continue
        if version == 1 and pool.listener not in listeners:
            continue  # v1 nests pools in the listeners it reports
        members = {m.id: rng.choice(MEMBER_STATES) for m in pool.members if rng.random() < 0.85}
        body = {"status": rng.choice(POOL_STATES), "members": members}
        key = f"{pool.id}:{pool.listener}"
        if version == 1:
            nested.setdefault(pool.listener, {})[key] = body
        else:
            pools[key] = body
    msg: dict[str, Any] = {"id": amphora, "seq": seq, "listeners": listeners}
    if version == 1:
        for lid, body in listeners.items():
            body["pools"] = nested.get(lid, {})
    else:
        msg["ver"] = version
        msg["pools"] = pools
    return msg


def _stats(case: Case, amphora: str, listener: str, version: int, rng: random.Random) -> dict:
    steps = [rng.randint(0, 10**6), rng.randint(0, 10**7), rng.randint(0, 50), rng.randint(0, 3)]
    conns = rng.randint(0, 500)
    if version == 3:  # deltas since the last message
        rx, tx, tot, ereq = steps
    else:  # absolute, never backwards (no HAProxy restart)
        held = case.counters.setdefault((amphora, listener), [0, 0, 0, 0])
        for i, step in enumerate(steps):
            held[i] += step
        rx, tx, tot, ereq = held
    return {"rx": rx, "tx": tx, "conns": conns, "totconns": tot, "ereq": ereq}


def rounds(cases: list[Case], count: int, rng: random.Random) -> list[list[dict[str, Any]]]:
    """``count`` rounds: in each, every amphora of every case sends one message."""
    out = []
    for n in range(count):
        messages = [message(case, amp, n, rng) for case in cases for amp in case.amphorae]
        rng.shuffle(messages)
        out.append(messages)
    return out


# --- rows in Octavia's tables ---------------------------------------------------


def insert(conn: sa.Connection, cases: list[Case]) -> None:
    """The cases' rows, with the columns Octavia's schema requires."""
    lbs, pools, listeners, members, amps = [], [], [], [], []
    for c in cases:
        lbs.append(
            {
                "id": c.lb_id,
                "project_id": "p",
                "provisioning_status": c.provisioning_status,
                "operating_status": c.operating_status,
                "enabled": c.enabled,
                "topology": c.topology,
                "provider": "amphora",
            }
        )
        for p in c.pools:
            pools.append(
                {
                    "id": p.id,
                    "project_id": "p",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "operating_status": p.operating_status,
                    "enabled": True,
                    "load_balancer_id": c.lb_id,
                    "provisioning_status": "ACTIVE",
                    "tls_enabled": False,
                }
            )
            for i, m in enumerate(p.members):
                members.append(
                    {
                        "id": m.id,
                        "project_id": "p",
                        "pool_id": p.id,
                        "ip_address": f"10.0.0.{i}",
                        "protocol_port": 80,
                        "weight": 1,
                        "operating_status": m.operating_status,
                        "enabled": m.enabled,
                        "provisioning_status": "ACTIVE",
                        "backup": False,
                        "vnic_type": "normal",
                    }
                )
        for i, lst in enumerate(c.listeners):
            listeners.append(
                {
                    "id": lst.id,
                    "project_id": "p",
                    "protocol": "HTTP",
                    "protocol_port": 80 + i,
                    "load_balancer_id": c.lb_id,
                    "default_pool_id": lst.default_pool,
                    "provisioning_status": "ACTIVE",
                    "operating_status": lst.operating_status,
                    "enabled": lst.enabled,
                    "client_authentication": "NONE",
                }
            )
        roles = ("MASTER", "BACKUP") if c.topology == "ACTIVE_STANDBY" else ("STANDALONE",)
        for amp, role in zip(c.amphorae, roles, strict=True):
            amps.append(
                {
                    "id": amp,
                    "compute_id": amp,
                    "status": "ALLOCATED",
                    "load_balancer_id": c.lb_id,
                    "role": role,
                    "cert_busy": False,
                }
            )
    for table, rows in (
        ("load_balancer", lbs),
        ("pool", pools),
        ("listener", listeners),
        ("member", members),
        ("amphora", amps),
    ):
        if rows:
            cols = list(rows[0])
            sql = (
                f"INSERT INTO {table} ({', '.join(cols)}) "
                f"VALUES ({', '.join(':' + c for c in cols)})"
            )
            conn.execute(sa.text(sql), rows)


def snapshot(conn: sa.Connection) -> dict[str, dict[Any, tuple]]:
    """What the health managers write, keyed by row (updated_at as "was it set")."""
    out: dict[str, dict[Any, tuple]] = {}
    for table in ("load_balancer", "listener", "pool", "member"):
        extra = ", provisioning_status" if table == "load_balancer" else ""
        rows = conn.execute(
            sa.text(f"SELECT id, operating_status, updated_at IS NOT NULL{extra} FROM {table}")
        ).all()
        out[table] = {r[0]: tuple(r[1:]) for r in rows}
    out["amphora"] = {
        r[0]: (r[1],) for r in conn.execute(sa.text("SELECT id, status FROM amphora"))
    }
    out["amphora_health"] = {
        r[0]: (bool(r[1]),)
        for r in conn.execute(sa.text("SELECT amphora_id, busy FROM amphora_health"))
    }
    out["listener_statistics"] = {
        (r[0], r[1]): tuple(r[2:])
        for r in conn.execute(
            sa.text(
                "SELECT listener_id, amphora_id, bytes_in, bytes_out, active_connections, "
                "total_connections, request_errors FROM listener_statistics"
            )
        )
    }
    return out


def simple(rng: random.Random, provisioning_status: str = "ACTIVE") -> Case:
    """One SINGLE load balancer with a listener, a pool, a member and its amphora."""
    member = Member(_id(rng), "ONLINE", True)
    pool = Pool(_id(rng), "ONLINE", [member])
    listener = Listener(_id(rng), "ONLINE", True, default_pool=pool.id)
    pool.listener = listener.id
    return Case(
        _id(rng), True, provisioning_status, "ONLINE", "SINGLE", [_id(rng)], [listener], [pool], {}
    )


def stale_health(conn: sa.Connection, amphorae: list[str], seconds_ago: int = 3600) -> None:
    """amphora_health rows as a dead amphora leaves them: not busy, last_update long ago."""
    conn.execute(
        sa.text(
            "INSERT INTO amphora_health (amphora_id, last_update, busy) "
            "VALUES (:a, UTC_TIMESTAMP() - INTERVAL :s SECOND, 0)"
        ),
        [{"a": a, "s": seconds_ago} for a in amphorae],
    )

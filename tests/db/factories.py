"""Test data: a seed load balancer (and fleets of them) inserted with Core.

Reusable by any test that needs rows in the shared tables::

    engine = make_test_engine(db_url)          # schema created
    seed = make_seed_lb(engine)                # 1 LB, 1 listener, 1 pool, 2 members, 1 amphora
    seed.amphorae[0]                           # 16-byte ids, as the manager uses them

``make_seed_lb`` takes an Engine (it commits) or a Connection (the caller
commits).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from healthmgr.db import models
from healthmgr.db.models import (
    Amphora,
    AmphoraHealth,
    HealthMonitor,
    Listener,
    LoadBalancer,
    Member,
    Pool,
)
from healthmgr.rules import constants as C
from healthmgr.wire.ids import Id, id_str

Target = sa.Engine | sa.Connection


def new_id() -> Id:
    return uuid.uuid4().bytes


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def make_test_engine(url: str, *, create: bool = True) -> sa.Engine:
    """The product's engine (SQLite pragmas etc.), with the tables created."""
    from healthmgr.db.engine import make_engine

    engine = make_engine(url)
    if create:
        models.metadata.create_all(engine)
    return engine


@dataclass(frozen=True, slots=True)
class SeedIds:
    """Ids (16 bytes) of what :func:`make_seed_lb` inserted."""

    load_balancer: Id
    amphorae: tuple[Id, ...]
    listeners: tuple[Id, ...]
    pools: tuple[Id, ...]
    members: tuple[Id, ...]  # all members, pool by pool
    members_by_pool: dict[Id, tuple[Id, ...]]
    health_monitors: tuple[Id, ...]

    @property
    def amphora(self) -> Id:
        return self.amphorae[0]

    @property
    def listener(self) -> Id:
        return self.listeners[0]

    @property
    def pool(self) -> Id:
        return self.pools[0]


def make_seed_lb(target: Target, **options: Any) -> SeedIds:
    """Insert one load balancer as the seed scenario has it, and return the ids.

    Options (all keyword): ``listeners`` (1) listeners on ports ``port``,
    ``port+1``...; ``pools`` (default: one per listener, each the default pool
    of its listener); ``members`` (2) per pool; ``health_monitor`` (True, HTTP,
    one per pool); ``amphorae`` (1: STANDALONE in a SINGLE LB, 2: MASTER and
    BACKUP in ACTIVE_STANDBY) with ``amphora_status`` and an ``amphora_health``
    row at ``last_update`` (default now, ``busy``) unless ``with_health`` is
    False; ``provisioning_status`` (ACTIVE) for every object;
    ``operating_status`` (ONLINE) for the LB, ``child_operating_status``
    (default the same) for the others; ``enabled``.
    """
    seed, rows = seed_rows(**options)
    _insert(target, rows)
    return seed


def seed_rows(
    *,
    listeners: int = 1,
    pools: int | None = None,
    members: int = 2,
    amphorae: int = 1,
    health_monitor: bool = True,
    provisioning_status: str = C.ACTIVE,
    operating_status: str = C.ONLINE,
    child_operating_status: str | None = None,
    enabled: bool = True,
    amphora_status: str = C.ALLOCATED,
    last_update: dt.datetime | None = None,
    busy: bool = False,
    with_health: bool = True,
    port: int = 80,
) -> tuple[SeedIds, list[tuple[Any, list[dict[str, Any]]]]]:
    """The ids and the rows (per table, in FK order) of one seed load balancer."""
    pools = listeners if pools is None else pools
    child_status = child_operating_status or operating_status
    now = utcnow()
    lb = new_id()
    listener_ids = tuple(new_id() for _ in range(listeners))
    pool_ids = tuple(new_id() for _ in range(pools))
    members_by_pool = {p: tuple(new_id() for _ in range(members)) for p in pool_ids}
    hm_ids = tuple(new_id() for _ in pool_ids) if health_monitor else ()
    amp_ids = tuple(new_id() for _ in range(amphorae))
    roles = (
        [C.STANDALONE] if amphorae == 1 else [C.MASTER, C.BACKUP, *[C.BACKUP] * amphorae][:amphorae]
    )

    common = {"provisioning_status": provisioning_status, "created_at": now, "updated_at": now}
    rows: list[tuple[Any, list[dict[str, Any]]]] = [
        (
            LoadBalancer,
            [
                {
                    "id": id_str(lb),
                    "name": "lb1",
                    "enabled": enabled,
                    "operating_status": operating_status,
                    "topology": C.SINGLE if amphorae == 1 else C.ACTIVE_STANDBY,
                    "provider": "amphora",
                    **common,
                }
            ],
        ),
        (
            Pool,
            [
                {
                    "id": id_str(p),
                    "load_balancer_id": id_str(lb),
                    "name": f"pool{i + 1}",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "enabled": True,
                    "operating_status": child_status,
                    **common,
                }
                for i, p in enumerate(pool_ids)
            ],
        ),
        (
            Listener,
            [
                {
                    "id": id_str(li),
                    "load_balancer_id": id_str(lb),
                    "name": f"listener{i + 1}",
                    "protocol": "HTTP",
                    "protocol_port": port + i,
                    "default_pool_id": id_str(pool_ids[i]) if i < len(pool_ids) else None,
                    "enabled": True,
                    "operating_status": child_status,
                    **common,
                }
                for i, li in enumerate(listener_ids)
            ],
        ),
        (
            Member,
            [
                {
                    "id": id_str(m),
                    "pool_id": id_str(p),
                    "name": f"web-{j + 1}",
                    "ip_address": f"127.0.0.{j + 1}",
                    "protocol_port": 8000 + j,
                    "weight": 1,
                    "backup": False,
                    "enabled": True,
                    "operating_status": child_status,
                    **common,
                }
                for p, ms in members_by_pool.items()
                for j, m in enumerate(ms)
            ],
        ),
        (
            HealthMonitor,
            [
                {
                    "id": id_str(h),
                    "pool_id": id_str(p),
                    "type": "HTTP",
                    "delay": 10,
                    "timeout": 10,
                    "rise_threshold": 2,
                    "fall_threshold": 2,
                    "http_method": "GET",
                    "url_path": "/",
                    "expected_codes": "200",
                    "enabled": True,
                    "operating_status": child_status,
                    **common,
                }
                for h, p in zip(hm_ids, pool_ids, strict=True)
            ],
        ),
        (
            Amphora,
            [
                {
                    "id": id_str(a),
                    "compute_id": id_str(new_id()),
                    "status": amphora_status,
                    "load_balancer_id": id_str(lb),
                    "lb_network_ip": f"192.0.2.{i + 1}",
                    "role": roles[i],
                    "created_at": now,
                    "updated_at": now,
                }
                for i, a in enumerate(amp_ids)
            ],
        ),
    ]
    if with_health:
        rows.append(
            (
                AmphoraHealth,
                [
                    {"amphora_id": id_str(a), "last_update": last_update or now, "busy": busy}
                    for a in amp_ids
                ],
            )
        )
    return SeedIds(
        load_balancer=lb,
        amphorae=amp_ids,
        listeners=listener_ids,
        pools=pool_ids,
        members=tuple(m for ms in members_by_pool.values() for m in ms),
        members_by_pool=members_by_pool,
        health_monitors=hm_ids,
    ), rows


def make_amphora(
    target: Target,
    *,
    load_balancer: Id | None = None,
    status: str = C.ALLOCATED,
    last_update: dt.datetime | None = None,
    busy: bool = False,
    with_health: bool = True,
) -> Id:
    """One amphora (with no load balancer by default) and its health row."""
    amp = new_id()
    now = utcnow()
    rows: list[tuple[Any, list[dict[str, Any]]]] = [
        (
            Amphora,
            [
                {
                    "id": id_str(amp),
                    "status": status,
                    "load_balancer_id": id_str(load_balancer) if load_balancer else None,
                    "role": C.STANDALONE,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
    ]
    if with_health:
        rows.append(
            (
                AmphoraHealth,
                [{"amphora_id": id_str(amp), "last_update": last_update or now, "busy": busy}],
            )
        )
    _insert(target, rows)
    return amp


def make_fleet(target: Target, count: int, **options: Any) -> list[SeedIds]:
    """``count`` seed load balancers (options as make_seed_lb), one executemany per table."""
    seeds: list[SeedIds] = []
    merged: dict[sa.Table, list[dict[str, Any]]] = {}
    for _ in range(count):
        seed, rows = seed_rows(**options)
        seeds.append(seed)
        for table, values in rows:
            merged.setdefault(table, []).extend(values)
    _insert(target, list(merged.items()))
    return seeds


def _insert(target: Target, rows: Sequence[tuple[Any, list[dict[str, Any]]]]) -> None:
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            _insert(conn, rows)
        return
    for table, values in rows:
        if values:
            target.execute(sa.insert(table), values)

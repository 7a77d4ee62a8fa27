"""A simulated fleet's load balancers as rows of the shared tables, and their removal.

What the API would have created for the fleet simulator's amphorae (one
ACTIVE, ONLINE load balancer per amphora, its listeners, pools and members),
so that managers accept their heartbeats; and, at the end of a run, every row
that those amphorae caused: statistics, health, failover requests and
healthmgr's own per-amphora rows too. Nothing else in the database is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from healthmgr.chaos.fleet import Topology
from healthmgr.db import models
from healthmgr.wire.ids import id_str

CHUNK = 500  # ids per IN (...) list


def insert_topology(engine: sa.Engine, topology: Topology) -> None:
    """The fleet simulator's load balancers as rows (ACTIVE, ONLINE), in one transaction."""
    rows: dict[sa.Table, list[dict[str, Any]]] = {
        t: []
        for t in (models.LoadBalancer, models.Amphora, models.Pool, models.Listener, models.Member)
    }
    common = {"provisioning_status": "ACTIVE", "operating_status": "ONLINE", "enabled": True}
    for amp in topology.amphorae:
        lb = id_str(amp.load_balancer_id)
        rows[models.LoadBalancer].append({"id": lb, "topology": "SINGLE", **common})
        rows[models.Amphora].append(
            {
                "id": id_str(amp.id),
                "status": "ALLOCATED",
                "load_balancer_id": lb,
                "role": "STANDALONE",
            }
        )
        for listener in amp.listeners:
            pool_id = id_str(listener.pools[0].id) if listener.pools else None
            for pool in listener.pools:
                rows[models.Pool].append(
                    {
                        "id": id_str(pool.id),
                        "load_balancer_id": lb,
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        **common,
                    }
                )
                rows[models.Member].extend(
                    {
                        "id": id_str(m),
                        "pool_id": id_str(pool.id),
                        "ip_address": "10.0.0.1",
                        "protocol_port": 80,
                        "weight": 1,
                        "backup": False,
                        **common,
                    }
                    for m in pool.members
                )
            rows[models.Listener].append(
                {
                    "id": id_str(listener.id),
                    "load_balancer_id": lb,
                    "protocol": "HTTP",
                    "protocol_port": 80,
                    "default_pool_id": pool_id,
                    **common,
                }
            )
    with engine.begin() as conn:
        for table, values in rows.items():
            for i in range(0, len(values), 5000):
                conn.execute(sa.insert(table), values[i : i + 5000])


def retire(engine: sa.Engine, amphorae: Sequence[str]) -> None:
    """Amphorae about to stop beating, DELETED first: no manager counts them silent
    toward its breaker (nor fails them over) while they are removed."""
    amp = models.Amphora
    with engine.begin() as conn:
        for chunk in chunks(list(amphorae)):
            conn.execute(sa.update(amp).where(amp.c.id.in_(chunk)).values(status="DELETED"))


def remove_topology(engine: sa.Engine, topology: Topology) -> None:
    """Delete every row of these amphorae and their load balancers, in one transaction."""
    amphorae = [id_str(a.id) for a in topology.amphorae]
    lbs = [id_str(a.load_balancer_id) for a in topology.amphorae]
    listeners = [id_str(li.id) for a in topology.amphorae for li in a.listeners]
    pools = [id_str(p.id) for a in topology.amphorae for li in a.listeners for p in li.pools]
    t = {
        m.name: m
        for m in (
            models.FailoverRequest,
            models.AmphoraReport,
            models.AmphoraHealth,
            models.ListenerStatistics,
            models.Member,
            models.Listener,
            models.Pool,
            models.HealthMonitor,
            models.Amphora,
            models.LoadBalancer,
        )
    }
    steps: list[tuple[sa.Table, sa.Column[Any], Sequence[str]]] = [
        (t["failover_request"], t["failover_request"].c.amphora_id, amphorae),
        (t["healthmgr_amphora"], t["healthmgr_amphora"].c.amphora_id, amphorae),
        (t["amphora_health"], t["amphora_health"].c.amphora_id, amphorae),
        (t["listener_statistics"], t["listener_statistics"].c.amphora_id, amphorae),
        (t["member"], t["member"].c.pool_id, pools),
        (t["health_monitor"], t["health_monitor"].c.pool_id, pools),
        (t["listener"], t["listener"].c.id, listeners),
        (t["pool"], t["pool"].c.id, pools),
        (t["amphora"], t["amphora"].c.id, amphorae),
        (t["load_balancer"], t["load_balancer"].c.id, lbs),
    ]
    with engine.begin() as conn:
        for table, column, ids in steps:
            for chunk in chunks(ids):
                conn.execute(sa.delete(table).where(column.in_(chunk)))


def chunks(ids: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]

"""Plain values for a load balancer's topology as the database has it.

The data layer builds these; the status rules and the manager's cache read
them. Ids are 16-byte UUIDs as in :mod:`healthmgr.wire.values`.
"""

from __future__ import annotations

from dataclasses import dataclass

from healthmgr.wire.ids import Id


@dataclass(frozen=True, slots=True)
class MemberTopology:
    id: Id
    pool_id: Id
    enabled: bool
    operating_status: str


@dataclass(frozen=True, slots=True)
class PoolTopology:
    id: Id
    enabled: bool
    operating_status: str
    members: tuple[MemberTopology, ...]


@dataclass(frozen=True, slots=True)
class ListenerTopology:
    id: Id
    enabled: bool
    operating_status: str
    default_pool_id: Id | None


@dataclass(frozen=True, slots=True)
class LoadBalancerTopology:
    id: Id
    enabled: bool
    provisioning_status: str
    operating_status: str
    listeners: tuple[ListenerTopology, ...]
    pools: tuple[PoolTopology, ...]


@dataclass(frozen=True, slots=True)
class AmphoraTopology:
    """An amphora and the load balancer it serves (None: not allocated)."""

    id: Id
    status: str
    role: str | None
    load_balancer: LoadBalancerTopology | None

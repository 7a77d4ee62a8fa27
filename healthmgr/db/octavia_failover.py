"""The database steps of the ``octavia`` failover driver, each done once per request.

Octavia's health manager, before it fails an amphora over, sets its load
balancer to PENDING_UPDATE with a test-and-set under a row lock
(``LoadBalancerRepository.set_status_for_failover``: only from ACTIVE or
ERROR); a load balancer in another state is immutable (the API's worker is
changing it) and the amphora is skipped. The driver does the same, and
records in ``healthmgr_octavia_failover`` what it did for the request, so
that running it again (a retry, or a manager taking an expired lease over)
neither trips over its own PENDING_UPDATE nor casts twice once the cast is
known to have been sent.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

from healthmgr.db.dbtime import utcnow
from healthmgr.db.models import LoadBalancer
from healthmgr.db.octavia_schema import OctaviaFailover
from healthmgr.rules import constants as C

# Octavia's FAILOVERABLE_STATUSES: the states a failover may start from.
FAILOVERABLE = (C.ACTIVE, C.ERROR)

_lb = LoadBalancer
_step = OctaviaFailover


class Lock(enum.Enum):
    LOCKED = "locked"  # PENDING_UPDATE set by this request (now or before): cast
    IMMUTABLE = "immutable"  # the load balancer is PENDING_* for someone else: skip
    CAST = "cast"  # the cast of this request was sent already: nothing to do


def lock_load_balancer(
    conn: sa.Connection, request_id: int, amphora_id: str, lb_id: str | None
) -> Lock:
    """Octavia's test-and-set for this request, in the caller's transaction."""
    row = conn.execute(
        sa.select(_step.c.lb_locked_at, _step.c.cast_at)
        .where(_step.c.request_id == request_id)
        .with_for_update()
    ).first()
    if row is not None and row.cast_at is not None:
        return Lock.CAST
    if row is not None and row.lb_locked_at is not None:
        return Lock.LOCKED
    if lb_id is not None:
        status = conn.execute(
            sa.select(_lb.c.provisioning_status).where(_lb.c.id == lb_id).with_for_update()
        ).scalar()
        if status is not None:
            if status not in FAILOVERABLE:
                return Lock.IMMUTABLE
            conn.execute(
                sa.update(_lb)
                .where(_lb.c.id == lb_id)
                .values(provisioning_status=C.PENDING_UPDATE, updated_at=utcnow())
            )
    values = {"lb_locked_at": utcnow()}
    if row is None:
        conn.execute(
            sa.insert(_step).values(
                request_id=request_id, amphora_id=amphora_id, load_balancer_id=lb_id, **values
            )
        )
    else:
        conn.execute(sa.update(_step).where(_step.c.request_id == request_id).values(**values))
    return Lock.LOCKED


def mark_cast(conn: sa.Connection, request_id: int) -> None:
    conn.execute(sa.update(_step).where(_step.c.request_id == request_id).values(cast_at=utcnow()))

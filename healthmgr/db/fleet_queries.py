"""The fleet a manager verifies heartbeats for: one query over every live amphora.

Read by the fleet loader every ``fleet_refresh_interval``; the decoder derives
keys only for these ids (healthmgr/manager/fleet.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from healthmgr.db.models import Amphora, AmphoraReport
from healthmgr.rules import constants as C
from healthmgr.wire.ids import Id, id_bytes

_amp = Amphora
_report = AmphoraReport


def load_fleet(conn: sa.Connection) -> tuple[set[Id], set[Id]]:
    """(ids of amphorae whose status is not DELETED, those of them that have
    spoken the native format: ``healthmgr_amphora.native_since`` set)."""
    rows = conn.execute(
        sa.select(_amp.c.id, _report.c.native_since.is_not(None))
        .select_from(_amp.outerjoin(_report, _report.c.amphora_id == _amp.c.id))
        .where(_amp.c.status != C.DELETED)
    )
    known: set[Id] = set()
    native: set[Id] = set()
    for text, is_native in rows:
        amphora_id = id_bytes(text)
        known.add(amphora_id)
        if is_native:
            native.add(amphora_id)
    return known, native

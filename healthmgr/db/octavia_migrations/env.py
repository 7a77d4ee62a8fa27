"""Alembic environment of healthmgr's own tables in Octavia's database.

Driven by healthmgr.db.migrate, as ``migrations/env.py``; it only ever creates,
alters or drops the tables in ``healthmgr.db.octavia_schema.OWN_TABLES`` and
writes only ``healthmgr_alembic_version``, never Octavia's ``alembic_version``.
"""

from healthmgr.db import octavia_schema
from healthmgr.db.migrate import run_environment

run_environment(octavia_schema.metadata)

"""The head revision of each packaged migration chain, pinned.

The start-up check (:func:`healthmgr.db.migrate.check_current`) compares the
database with these instead of asking Alembic, whose import (with Mako and
Pygments) was about a tenth of the CPU of each start of the daemon and of a
CLI command.
A new migration changes its chain's head here too: tests/db/test_migrations.py
fails while a pinned head differs from Alembic's.
"""

from __future__ import annotations

from healthmgr.db.octavia_schema import NATIVE, OCTAVIA

HEADS: dict[str, str] = {
    NATIVE: "0003",  # healthmgr/db/migrations
    OCTAVIA: "o001",  # healthmgr/db/octavia_migrations
}

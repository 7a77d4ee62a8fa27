"""The daemon's database modules stay on SQLAlchemy Core (issue 11: start-up cost)."""

from __future__ import annotations

import subprocess
import sys

DAEMON_MODULES = (
    "healthmgr.cli.serve",
    "healthmgr.manager.service",
    "healthmgr.db.store",
    "healthmgr.db.migrate",
)


def test_the_daemon_does_not_import_the_orm() -> None:
    # A fresh interpreter: the test process may have the ORM loaded already.
    code = f"import sys, {', '.join(DAEMON_MODULES)}; print('sqlalchemy.orm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

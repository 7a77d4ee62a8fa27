"""Alembic environment for healthmgr's native schema (see healthmgr.db.migrate)."""

from healthmgr.db import models
from healthmgr.db.migrate import run_environment

run_environment(models.metadata)

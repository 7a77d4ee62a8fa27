"""Alembic environment for healthmgr's native schema (see healthmgr.db.migrate)."""

from healthmgr.db.migrate import run_environment
from healthmgr.db.models import Base

run_environment(Base.metadata)

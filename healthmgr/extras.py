"""The two installs: the base (an amphora: the agent and the wire codec) and
``healthmgr[manager]`` (the daemon, the CLI and the tools). A manager command
started on a base install says what to install, in one line."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Top-level modules that only healthmgr[manager] installs.
MANAGER_ONLY = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "structlog",
        "prometheus_client",
        "pydantic_settings",
        "psycopg",
        "pymysql",
        "sdnotify",
        "cliff",
        "h11",
        "tomli_w",
    }
)


def run_manager_command(command: str, module: str, argv: Sequence[str] | None = None) -> int:
    """``module.main(argv)``, or exit status 2 with a hint if healthmgr[manager] is missing."""
    try:
        entry = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in MANAGER_ONLY:
            raise
        sys.stderr.write(
            f"{command}: this install has the amphora agent only ({exc.name} is missing); "
            "the manager needs: pip install 'healthmgr[manager]'\n"
        )
        return 2
    return int(entry.main(argv))

"""The ``healthmgr`` command line (healthmgr/cli/main.py; needs healthmgr[manager])."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from healthmgr.extras import run_manager_command

    return run_manager_command("healthmgr", "healthmgr.cli.main", argv)

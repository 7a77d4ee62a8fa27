"""Fault injection for tests and drills: what goes wrong between the manager and its peers."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """``healthmgr-chaos`` (healthmgr/chaos/cli.py; needs healthmgr[manager])."""
    from healthmgr.extras import run_manager_command

    return run_manager_command("healthmgr-chaos", "healthmgr.chaos.cli", argv)

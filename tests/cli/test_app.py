"""The application itself: help, versions, the exit-status scheme, option errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from healthmgr import __version__
from healthmgr.cli.errors import Exit
from healthmgr.cli.main import COMMANDS
from tests.cli.clitest import (
    ROOT,
    clean_env,
    cli,
    healthmgr,
)

pytestmark = pytest.mark.usefixtures("no_healthmgr_env")


def test_help_is_for_users_and_lists_every_command() -> None:
    done = healthmgr("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: healthmgr")
    assert "the health manager of load-balancer amphorae" in done.stdout
    for word in ("Entry point", "register", "sub-command module"):  # the old developer docstring
        assert word not in done.stdout
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", done.stdout, re.M), f"{name} missing from --help"
    assert "Could not load" not in done.stdout + done.stderr


def test_version_of_both_programs() -> None:
    done = healthmgr("--version")
    assert (done.returncode, done.stdout) == (0, f"healthmgr {__version__}\n")
    agent = subprocess.run(
        [sys.executable, "-m", "agent.main", "--version"],
        capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert (agent.returncode, agent.stdout) == (0, f"amphora-agent {__version__}\n")


def test_no_command_and_an_unknown_one_are_usage_errors() -> None:
    assert cli().returncode == Exit.USAGE
    unknown = cli("frobnicate")
    assert unknown.returncode == Exit.USAGE
    assert "'frobnicate' is not a healthmgr command" in unknown.stderr


def test_an_unknown_column_is_a_usage_error(tmp_path: Path) -> None:
    done = cli("keys", "generate", "-c", "nope")
    assert done.returncode == Exit.USAGE
    assert done.stderr.startswith("healthmgr: error: -c: No recognized column names in ['nope']")


def test_exit_statuses_are_documented() -> None:
    """docs/cli.md lists each status of healthmgr.cli.errors.Exit, with its number."""
    text = (ROOT / "docs" / "cli.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", text, re.M))
    assert table == {str(int(e)): e.name for e in Exit}


def test_every_command_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for name in COMMANDS:
        assert f"healthmgr {name}" in text, f"docs/cli.md does not describe `healthmgr {name}`"

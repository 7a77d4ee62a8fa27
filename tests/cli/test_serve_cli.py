"""`healthmgr serve` beyond its start-up errors (tests/manager/test_daemon_ops.py has those)."""

from __future__ import annotations

from pathlib import Path

from healthmgr import __version__
from healthmgr.config import load_settings
from healthmgr.manager.service import Daemon
from tests.cli.clitest import cli


def test_build_info_carries_the_configured_manager_id(tmp_path: Path) -> None:
    path = tmp_path / "hm.toml"
    path.write_text(
        f'[health_manager]\nmanager_id = "hm-east-1"\n[database]\n'
        f'connection = "sqlite:///{tmp_path / "hm.db"}"\n'
    )
    daemon = Daemon(load_settings(path, env={}), config_path=str(path))
    try:
        labels = {"version": __version__, "manager_id": "hm-east-1"}
        assert daemon.metrics.value("healthmgr_build_info", labels) == 1
    finally:
        daemon.engine.dispose()


def test_a_bad_configuration_exits_3_from_serve_as_from_every_command(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[health_manager]\nbind_port = 70000\n")
    for command in (["serve"], ["config", "check"], ["db", "current"], ["amphora", "list"]):
        done = cli(*command, "--config", str(path))
        assert done.returncode == 3, (command, done.stderr)
    serve = cli("serve", "--config", str(path))
    assert f"`healthmgr config check --config {path}`" in serve.stderr

"""`healthmgr config check|show` as an operator runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

SECRET = "0123456789abcdef0123"


def healthmgr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMGR_")}
    return subprocess.run(
        [sys.executable, "-m", "healthmgr", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_check_ok(tmp_path: Path) -> None:
    path = tmp_path / "hm.toml"
    path.write_text(f"[[keys.master]]\nid = 1\nsecret = '{SECRET}'\n")
    done = healthmgr("config", "check", "--config", str(path))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"OK: {path}\n", "")


def test_check_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "hm.toml"
    path.write_text("[health_manager]\nbind_port = 70000\nheartbeat_timout = 3\n")
    done = healthmgr(
        "config", "check", "--config", str(path), env={"HEALTHMGR_LOGGING__LEVEL": "loud"}
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "health_manager.bind_port: 70000 is not a valid port (1-65535)",
        "health_manager.heartbeat_timout: unknown option",
        "logging.level: 'LOUD': input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or "
        "'CRITICAL' (from HEALTHMGR_LOGGING__LEVEL)",
    ]


def test_check_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    done = healthmgr("config", "check", "--config", str(missing))
    assert (done.returncode, done.stderr) == (1, f"{missing}: no such file\n")
    done = healthmgr("config", "check", env={"HEALTHMGR_CONFIG": str(missing)})
    assert (done.returncode, done.stderr) == (1, f"{missing}: no such file\n")


def test_check_without_keys_warns(tmp_path: Path) -> None:
    path = tmp_path / "hm.toml"
    path.write_text("")
    done = healthmgr("config", "check", "--config", str(path))
    assert done.returncode == 0
    assert "every heartbeat will be rejected" in done.stderr


def test_show_redacts_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2-password\n")
    path = tmp_path / "hm.toml"
    path.write_text(
        f"""
[health_manager]
heartbeat_key = "octavia-shared-key"
[[keys.master]]
id = 1
secret = "{SECRET}"
[database]
connection = "postgresql+psycopg://hm@db/hm"
password_file = "{tmp_path / "pw"}"
"""
    )
    done = healthmgr(
        "config", "show", "--config", str(path), env={"HEALTHMGR_HEALTH_MANAGER__BIND_PORT": "6000"}
    )
    assert done.returncode == 0, done.stderr
    for secret in (SECRET, "hunter2", "octavia-shared-key"):
        assert secret not in done.stdout
    shown = tomllib.loads(done.stdout)
    assert shown["health_manager"]["bind_port"] == 6000
    assert shown["health_manager"]["heartbeat_key"] == "<redacted>"
    assert shown["keys"]["master"] == [{"id": 1, "secret": "<redacted>"}]
    assert shown["database"]["connection"] == "postgresql+psycopg://hm:***@db/hm"

    as_json = healthmgr("config", "show", "--config", str(path), "-f", "json")
    assert as_json.returncode == 0 and '"<redacted>"' in as_json.stdout


def test_show_of_defaults_is_a_valid_config(tmp_path: Path) -> None:
    done = healthmgr("config", "show", env={"HEALTHMGR_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    path = tmp_path / "shown.toml"
    path.write_text(done.stdout)
    assert healthmgr("config", "check", "--config", str(path)).returncode == 0

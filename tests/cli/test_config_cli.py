"""`healthmgr config check|show` as an operator runs it: a real subprocess for the wiring,
in-process for the rest."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from healthmgr.db import migrate
from tests.cli.clitest import Db, cli, healthmgr, on_sqlite_as_a_process, one_error_line

SECRET = "0123456789abcdef0123"
KEYS = f"[[keys.master]]\nid = 1\nsecret = '{SECRET}'\n"
pytestmark = pytest.mark.usefixtures("no_healthmgr_env")


def write(tmp_path: Path, text: str, name: str = "hm.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_ok(tmp_path: Path) -> None:
    # In this process: `config check -f json` passing as a process is
    # test_check_connect_reaches_the_database[sqlite].
    path = write(tmp_path, f"[[keys.master]]\nid = 1\nsecret = '{SECRET}'\n")
    done = cli("config", "check", "--config", str(path), "-f", "json")
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {"config": str(path), "result": "OK", "warnings": []}


def test_check_names_every_problem_and_exits_3(tmp_path: Path) -> None:
    path = write(tmp_path, "[health_manager]\nbind_port = 70000\nheartbeat_timout = 3\n")
    done = healthmgr(
        "config", "check", "--config", str(path), env={"HEALTHMGR_LOGGING__LEVEL": "loud"}
    )
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "health_manager.bind_port: 70000 is not a valid port (1-65535)",
        "health_manager.heartbeat_timout: unknown option",
        "logging.level: 'LOUD': input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or "
        "'CRITICAL' (from HEALTHMGR_LOGGING__LEVEL)",
    ]


def test_check_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    done = cli("config", "check", "--config", str(missing))
    assert (done.returncode, done.stderr) == (3, f"{missing}: no such file\n")
    monkeypatch.setenv("HEALTHMGR_CONFIG", str(missing))
    done = cli("config", "check")
    assert (done.returncode, done.stderr) == (3, f"{missing}: no such file\n")


def test_check_without_keys_warns(tmp_path: Path) -> None:
    done = cli("config", "check", "--config", str(write(tmp_path, "")))
    assert done.returncode == 0
    assert "every heartbeat will be rejected" in done.stderr


def test_warning_names_octavia_compat_when_the_key_is_set(tmp_path: Path) -> None:
    """heartbeat_key set, octavia_compat off: the missing option is octavia_compat."""
    path = write(tmp_path, '[health_manager]\nheartbeat_key = "octavia-shared-key"\n')
    done = cli("config", "check", "--config", str(path))
    assert done.returncode == 0
    warning = done.stderr.strip()
    assert "octavia_compat" in warning
    assert "no Octavia heartbeat_key" not in warning


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('octavia_compat = "yes"', "health_manager.octavia_compat: 'yes': input should be a valid"),
        ('bind_port = "5555"', "health_manager.bind_port: expected an integer, got '5555'"),
        ("failover_threshold = 2.5", "health_manager.failover_threshold: 2.5"),
        ("reuse_port = 1", "health_manager.reuse_port: 1: input should be a valid boolean"),
    ],
)
def test_wrong_toml_types_are_errors_not_coerced(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, f"[health_manager]\n{text}\n")
    done = cli("config", "check", "--config", str(path))
    assert done.returncode == 3
    assert done.stderr.startswith(problem), done.stderr


def test_environment_values_are_text_and_still_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "OCTAVIA_COMPAT": "true",
        "HEARTBEAT_KEY": "12345",  # a string option stays a string
        "BIND_PORT": "6000",
        "HEARTBEAT_INTERVAL": "2",
        "FAILOVER_THRESHOLD": "3",
    }.items():
        monkeypatch.setenv(f"HEALTHMGR_HEALTH_MANAGER__{name}", value)
    monkeypatch.setenv("HEALTHMGR_CONFIG", "")
    done = cli("config", "show", "-f", "json", "-c", "health_manager")
    assert done.returncode == 0, done.stderr
    hm = json.loads(done.stdout)["health_manager"]
    assert (hm["octavia_compat"], hm["bind_port"], hm["heartbeat_interval"]) == (True, 6000, 2.0)
    assert (hm["failover_threshold"], hm["heartbeat_key"]) == (3, "<redacted>")
    monkeypatch.setenv("HEALTHMGR_HEALTH_MANAGER__REUSE_PORT", "maybe")
    done = cli("config", "check")
    assert done.returncode == 3
    assert "(from HEALTHMGR_HEALTH_MANAGER__REUSE_PORT)" in done.stderr


def test_show_redacts_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2-password\n")
    path = write(
        tmp_path,
        f"""
[health_manager]
heartbeat_key = "octavia-shared-key"
[[keys.master]]
id = 1
secret = "{SECRET}"
[database]
connection = "postgresql+psycopg://hm@db/hm"
password_file = "{tmp_path / "pw"}"
""",
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
    assert shown["database"]["connection"] == "postgresql+psycopg://hm@db/hm"
    assert shown["database"]["password_file"] == str(tmp_path / "pw")

    as_json = cli("config", "show", "--config", str(path), "-f", "json", "-c", "keys")
    assert as_json.returncode == 0 and list(json.loads(as_json.stdout)) == ["keys"]


def test_show_output_with_secret_files_passes_check(tmp_path: Path) -> None:
    for name, text in {
        "k1": "a master secret from a file",
        "hb": "octavia-key",
        "pw": "pw",
    }.items():
        (tmp_path / name).write_text(text + "\n")
    (tmp_path / "url").write_text(f"sqlite:///{tmp_path / 'x.db'}\n")
    path = write(
        tmp_path,
        f"""
[health_manager]
octavia_compat = true
heartbeat_key_file = "{tmp_path / "hb"}"
[[keys.master]]
id = 1
secret_file = "{tmp_path / "k1"}"
[database]
connection_file = "{tmp_path / "url"}"
""",
    )
    shown = cli("config", "show", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    again = write(tmp_path, shown.stdout, "shown.toml")
    check = cli("config", "check", "--config", str(again))
    assert (check.returncode, check.stderr) == (0, ""), check.stderr
    assert tomllib.loads(shown.stdout)["keys"]["master"] == [
        {"id": 1, "secret_file": str(tmp_path / "k1")}
    ]
    # password_file: the URL is shown without the password the file adds.
    with_pw = write(
        tmp_path,
        f'[database]\nconnection = "postgresql://hm@db/hm"\npassword_file = "{tmp_path / "pw"}"\n',
        "pw.toml",
    )
    shown = cli("config", "show", "--config", str(with_pw))
    again = write(tmp_path, shown.stdout, "shown-pw.toml")
    assert cli("config", "check", "--config", str(again)).returncode == 0


def test_show_of_defaults_is_a_valid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMGR_CONFIG", "")
    done = cli("config", "show")
    assert done.returncode == 0, done.stderr
    path = write(tmp_path, done.stdout, "shown.toml")
    assert cli("config", "check", "--config", str(path)).returncode == 0


def test_check_connect_reaches_the_database(db: Db, tmp_path: Path) -> None:
    """For ExecStartPre: the database reachable and at head (each dialect), as a process."""
    path = write(tmp_path, f'[database]\nconnection = "{db.url}"\n{KEYS}')
    done = on_sqlite_as_a_process(
        db.url, "config", "check", "--connect", "--config", str(path), "-f", "json"
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert json.loads(done.stdout)["database"].endswith(f"schema at {migrate.head()} (head)")


def test_check_connect_refuses_a_schema_behind_keeping_the_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0001")
    path = write(tmp_path, f'[database]\nconnection = "{url}"\n{KEYS}')
    done = cli("config", "check", "--connect", "--config", str(path))
    assert done.returncode == 5
    line = one_error_line(done)
    assert f"run `healthmgr db upgrade --config {path}`" in line


def test_check_connect_unreachable_database(tmp_path: Path) -> None:
    path = write(
        tmp_path, f'[database]\nconnection = "postgresql://hm:s3cret@127.0.0.1:1/hm"\n{KEYS}'
    )
    done = cli("config", "check", "--connect", "--config", str(path))
    assert done.returncode == 4
    line = one_error_line(done)
    assert "cannot reach the database (PostgreSQL at 127.0.0.1:1/hm)" in line
    assert "s3cret" not in line

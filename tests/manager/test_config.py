"""Configuration: file + environment + secret files, every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthmgr.config import (
    DEFAULT_CONFIG_PATH,
    RELOADABLE,
    ConfigError,
    Settings,
    diff_reloadable,
    env_var_name,
    load_settings,
    redacted,
)
from healthmgr.wire.keys import MasterKey

REPO = Path(__file__).resolve().parents[2]
SECRET = "0123456789abcdef0123"


def write(tmp_path: Path, text: str, name: str = "healthmgr.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return info.value.problems


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(None, env={}, default_path=tmp_path / "healthmgr.toml")
    hm = settings.health_manager
    assert (hm.bind_ip, hm.bind_port, hm.heartbeat_interval, hm.heartbeat_timeout) == (
        "0.0.0.0",
        5555,
        10.0,
        60.0,
    )
    assert hm.health_check_interval == 3.0
    assert hm.failover_threshold == "10%"
    assert hm.failover_threads == 10
    assert settings.failover.driver == "record"
    assert settings.database.connection == "sqlite:////var/lib/healthmgr/healthmgr.db"
    assert settings.keys.master_keys == []
    assert settings.source is None


def test_the_default_file_is_read_when_it_exists(tmp_path: Path) -> None:
    # What a host's /etc/healthmgr/healthmgr.toml does, and why the test above names its own.
    default = write(tmp_path, "[health_manager]\nbind_port = 6000\n")
    settings = load_settings(None, env={}, default_path=default)
    assert settings.health_manager.bind_port == 6000
    assert settings.source == str(default)
    assert DEFAULT_CONFIG_PATH == "/etc/healthmgr/healthmgr.toml"  # what the docs name


def test_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example names secret files under /etc; point them at real files.
    text = (REPO / "docs" / "healthmgr.example.toml").read_text()
    for name in ("master-1.key", "master-2.key", "db-password"):
        (tmp_path / name).write_text("s3cret-value-of-at-least-16-bytes\n")
        text = text.replace(f"/etc/healthmgr/{name}", str(tmp_path / name))
    settings = load_settings(write(tmp_path, text), env={})
    assert [k.id for k in settings.keys.master_keys] == [1, 2]
    assert settings.keys.active_key_id == 2
    assert ":s3cret-value-of-at-least-16-bytes@" in settings.database.connection


def test_every_bad_key_and_value_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[health_manager]
bind_port = 70000
heartbeat_timout = 3
bind_ip = "not-an-ip"
controller_ip_port_list = ["10.0.0.1:5555", "nope"]
failover_threshold = 0

[failover]
driver = "carrier-pigeon"
max_attempts = 0

[metrics]
bind = "everywhere"

[logging]
level = "chatty"

[extras]
x = 1
""",
    )
    found = problems(path)
    expected = [
        "health_manager.bind_port: 70000 is not a valid port (1-65535)",
        "health_manager.heartbeat_timout: unknown option",
        "health_manager.bind_ip: ",
        "health_manager.controller_ip_port_list: 'nope'",
        "health_manager.failover_threshold: ",
        "failover.driver: unknown driver 'carrier-pigeon' (available: exec, octavia, record)",
        "failover.max_attempts: ",
        "metrics.bind: ",
        "logging.level: ",
        "extras: unknown section",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == len(expected)


def test_summary_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[health_manager]\nbind_port = 0\nbind_ip = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    text = str(info.value)
    assert "\n" not in text
    assert str(path) in text and "and 1 more problem" in text


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "[health_manager\nbind_port = 1\n")
    [problem] = problems(bad)
    assert problem.startswith(f"{bad}: invalid TOML") and "line 1" in problem
    missing = tmp_path / "absent.toml"
    assert problems(missing) == [f"{missing}: no such file"]
    # $HEALTHMGR_CONFIG is explicit too: a missing file is an error, not defaults.
    assert problems(None, {"HEALTHMGR_CONFIG": str(missing)}) == [f"{missing}: no such file"]


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[health_manager]\nbind_port = 5556\nheartbeat_timeout = 90\n")
    env = {
        "HEALTHMGR_HEALTH_MANAGER__BIND_PORT": "6000",
        "healthmgr_logging__level": "debug",
        "HEALTHMGR_DATABASE__CONNECTION": "postgresql+psycopg://hm@db/hm",
        "HEALTHMGR_HEALTH_MANAGER__CONTROLLER_IP_PORT_LIST": "10.0.0.1:5555, [fd00::2]:5555",
        "HEALTHMGR_FAILOVER__DRIVER": "exec",
        "HEALTHMGR_FAILOVER__COMMAND": "/usr/local/bin/failover --amphora {amphora_id}",
        "HEALTHMGR_KEYS__MASTER": f'[{{"id": 3, "secret": "{SECRET}"}}]',
        "HEALTHMGR_CONFIG": "/ignored/because/path/is/given",
        "HEALTHMGR_REQUIRE_SERVICES": "1",  # no "__": not an option, ignored
    }
    settings = load_settings(path, env=env)
    assert settings.source == str(path)
    assert settings.health_manager.bind_port == 6000
    assert settings.health_manager.heartbeat_timeout == 90
    assert settings.logging.level == "DEBUG"
    assert settings.database.connection == "postgresql+psycopg://hm@db/hm"
    assert settings.health_manager.controllers == [("10.0.0.1", 5555), ("fd00::2", 5555)]
    assert settings.failover.command == ["/usr/local/bin/failover", "--amphora", "{amphora_id}"]
    assert settings.keys.master_keys == [MasterKey(3, SECRET.encode())]
    assert settings.keys.active_key_id == 3
    assert env_var_name("health_manager", "bind_port") == "HEALTHMGR_HEALTH_MANAGER__BIND_PORT"


def test_config_path_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[health_manager]\nbind_port = 5999\n")
    settings = load_settings(None, env={"HEALTHMGR_CONFIG": str(path)})
    assert settings.health_manager.bind_port == 5999


def test_env_problems_name_the_variable() -> None:
    found = problems(
        None,
        {
            "HEALTHMGR_HEALTH_MANAGER__BIND_PORT": "70000",
            "HEALTHMGR_HEALTH_MANAGER__BIND_PROT": "1",
        },
    )
    assert (
        "health_manager.bind_port: 70000 is not a valid port (1-65535) "
        "(from HEALTHMGR_HEALTH_MANAGER__BIND_PORT)" in found
    )
    assert any(p.startswith("health_manager.bind_prot: unknown option") for p in found)
    [typo] = problems(None, {"HEALTHMGR_HEALTH_MANAGR__BIND_PORT": "1"})
    assert typo.startswith("HEALTHMGR_HEALTH_MANAGR__BIND_PORT: unknown section 'health_managr'")
    [bad_json] = problems(None, {"HEALTHMGR_KEYS__MASTER": "id=1"})
    assert bad_json.startswith("HEALTHMGR_KEYS__MASTER: not valid JSON")


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "k1").write_text("abcdefghijklmnopqrstuvwxyz\n")
    (tmp_path / "hb").write_text("octavia-shared-key\n")
    (tmp_path / "pw").write_text("p@ss/word:x\n")
    path = write(
        tmp_path,
        f"""
[health_manager]
heartbeat_key_file = "{tmp_path / "hb"}"

[keys]
active_key_id = 1
[[keys.master]]
id = 1
secret_file = "{tmp_path / "k1"}"
[[keys.master]]
id = 2
secret = "{SECRET}"

[database]
connection = "postgresql+psycopg://healthmgr@db.example/healthmgr"
password_file = "{tmp_path / "pw"}"
""",
    )
    settings = load_settings(path, env={})
    assert settings.health_manager.heartbeat_key == "octavia-shared-key"
    assert settings.keys.master_keys == [
        MasterKey(1, b"abcdefghijklmnopqrstuvwxyz"),
        MasterKey(2, SECRET.encode()),
    ]
    from sqlalchemy.engine import make_url

    assert make_url(settings.database.connection).password == "p@ss/word:x"
    shown = redacted(settings)
    text = repr(shown) + repr(settings)
    for secret in ("abcdefghijklmnop", "octavia-shared-key", "p@ss", SECRET):
        assert secret not in text
    # The password comes from password_file, which is shown: a valid configuration again.
    assert shown["database"]["connection"] == "postgresql+psycopg://healthmgr@db.example/healthmgr"
    assert shown["database"]["password_file"] == str(tmp_path / "pw")


def test_connection_from_file(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("mysql+pymysql://root@127.0.0.1/hm\n")
    path = write(tmp_path, f'[database]\nconnection_file = "{tmp_path / "url"}"\n')
    assert load_settings(path, env={}).database.connection == "mysql+pymysql://root@127.0.0.1/hm"


def test_key_problems(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("tiny\n")
    path = write(
        tmp_path,
        f"""
[keys]
active_key_id = 9
[[keys.master]]
id = 1
secret = "{SECRET}"
[[keys.master]]
id = 1
secret = "{SECRET}"
[[keys.master]]
id = 70000
secret = "{SECRET}"
[[keys.master]]
id = 4
secret_file = "{tmp_path / "short"}"
[[keys.master]]
id = 5
secret_file = "{tmp_path / "absent"}"
[[keys.master]]
id = 6
""",
    )
    found = problems(path)
    assert "keys.master[2].id: 70000: input should be less than or equal to 65535" in found
    assert any(p.startswith(f"keys.master[3].secret_file: secret_file {tmp_path}") for p in found)
    assert any("is 4 byte(s); at least 16 are required" in p for p in found)
    assert any(p.startswith("keys.master[4].secret_file: cannot read") for p in found)
    assert "keys.master[5].secret: set exactly one of secret and secret_file" in found

    dup = write(tmp_path, f"[[keys.master]]\nid=1\nsecret='{SECRET}'\n" * 2, "dup.toml")
    assert problems(dup) == ["keys.master: key id 1 is listed twice"]
    unknown = write(
        tmp_path, f"[keys]\nactive_key_id = 2\n[[keys.master]]\nid=1\nsecret='{SECRET}'\n", "u.toml"
    )
    assert problems(unknown) == [
        "keys.active_key_id: 2 is not the id of a [[keys.master]] entry (ids: [1])"
    ]


def test_cross_field_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[health_manager]
heartbeat_interval = 10
heartbeat_timeout = 10
heartbeat_key = "a"
heartbeat_key_file = "/dev/null"

[failover]
driver = "exec"
""",
    )
    found = problems(path)
    assert any(
        p.startswith("health_manager.heartbeat_timeout: 10.0 must be greater") for p in found
    )
    assert any(p.startswith("health_manager.heartbeat_key_file:") for p in found)
    assert any(p.startswith('failover.command: required by driver = "exec"') for p in found)
    bad_placeholder = write(
        tmp_path, '[failover]\ndriver = "exec"\ncommand = ["x", "{amphora}"]\n', "p.toml"
    )
    [problem] = problems(bad_placeholder)
    assert problem.startswith("failover.command: unknown placeholder {amphora}")


def test_diff_reloadable() -> None:
    old = load_settings(None, env={})
    new = load_settings(
        None,
        env={
            "HEALTHMGR_LOGGING__LEVEL": "DEBUG",
            "HEALTHMGR_HEALTH_MANAGER__FAILOVER_THRESHOLD": "5",
            "HEALTHMGR_KEYS__MASTER": f'[{{"id": 1, "secret": "{SECRET}"}}]',
            "HEALTHMGR_HEALTH_MANAGER__BIND_PORT": "6000",
            "HEALTHMGR_DATABASE__CONNECTION": "sqlite:////tmp/x.db",
        },
    )
    live, restart = diff_reloadable(old, new)
    assert live == {
        "logging.level",
        "health_manager.failover_threshold",
        "keys.master",
        "keys.active_key_id",
    }
    assert restart == {"health_manager.bind_port", "database.connection"}
    assert diff_reloadable(old, old) == (frozenset(), frozenset())
    # Every reloadable name is a real option.
    options = {
        f"{section}.{option}"
        for section, field in Settings.model_fields.items()
        for option in field.annotation.model_fields  # type: ignore[union-attr]
    }
    assert options >= RELOADABLE


def test_key_file_change_is_seen_on_reload(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text(SECRET + "\n")
    path = write(tmp_path, f'[[keys.master]]\nid = 1\nsecret_file = "{key}"\n')
    old = load_settings(path, env={})
    key.write_text("a-completely-new-secret-value\n")
    live, restart = diff_reloadable(old, load_settings(path, env={}))
    assert live == {"keys.master"} and not restart


def test_health_update_resolution_must_leave_room_before_the_timeout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[health_manager]\nheartbeat_interval = 10\nheartbeat_timeout = 60\n"
        "health_update_resolution = 50\nstats_update_every = 0\n",
    )
    found = problems(path)
    assert any(p.startswith("health_manager.health_update_resolution: 50.0 plus") for p in found)
    assert any(p.startswith("health_manager.stats_update_every:") for p in found)
    ok = write(tmp_path, "[health_manager]\nhealth_update_resolution = 20\n", "ok.toml")
    assert load_settings(ok, env={}).health_manager.health_update_resolution == 20.0

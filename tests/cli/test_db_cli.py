"""`healthmgr db ...` as an operator runs it: real databases; a real process where the
process is the point (the exit status and stderr of `python -m healthmgr`), the same cliff
application in-process elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from healthmgr.db import migrate
from tests.cli.clitest import cli, healthmgr

ROOT = Path(__file__).resolve().parents[2]


def in_process(_capsys: object, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (faster)."""
    return cli(*args)


def test_upgrade_then_current_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "sqlite:///data/hm.db"  # relative: the directory is created
    monkeypatch.chdir(tmp_path)  # for the in-process commands, as cwd= for the process
    before = in_process(capsys, "db", "current", "--db-url", url, "-f", "value", "-c", "revision")
    assert before.returncode == 0, before.stderr
    assert before.stdout == "None\n"

    # The real process once: `python -m healthmgr db upgrade` from another directory.
    first = healthmgr("db", "upgrade", "--db-url", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from none to {migrate.head()}" in first.stderr  # the confirmation line
    assert "| after    | " + migrate.head() in first.stdout
    assert (tmp_path / "data" / "hm.db").is_file()

    again = in_process(capsys, "db", "upgrade", "--db-url", url)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr

    current = in_process(
        capsys, "db", "current", "--check", "--db-url", url, "-f", "value", "-c", "revision",
        "-c", "position",
    )  # fmt: skip
    assert current.returncode == 0, current.stderr
    assert current.stdout == f"{migrate.head()}\nhead\n"


def test_upgrade_then_current_on_a_server(
    server_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    upgraded = in_process(capsys, "db", "upgrade", "--db-url", server_db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    current = in_process(capsys, "db", "current", "--db-url", server_db_url, "-f", "json")
    assert current.returncode == 0, current.stderr
    assert json.loads(current.stdout)["revision"] == migrate.head()


def test_url_from_the_config_file_and_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("HEALTHMGR_"):
            monkeypatch.delenv(name)
    config = tmp_path / "healthmgr.toml"
    config.write_text(f'[database]\nconnection = "sqlite:///{tmp_path / "from_file.db"}"\n')
    by_file = in_process(capsys, "db", "upgrade", "--config", str(config))
    assert by_file.returncode == 0, by_file.stderr
    assert (tmp_path / "from_file.db").is_file()

    env_url = f"sqlite:///{tmp_path / 'from_env.db'}"
    monkeypatch.setenv("HEALTHMGR_DATABASE__CONNECTION", env_url)
    by_env = in_process(capsys, "db", "upgrade")
    assert by_env.returncode == 0, by_env.stderr
    assert (tmp_path / "from_env.db").is_file()


def test_current_check_fails_on_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    result = in_process(capsys, "db", "current", "--check", "--db-url", url)
    assert result.returncode == 5
    # The hint names the database the command was given, so following it acts on that one.
    assert f"run `healthmgr db upgrade --db-url {url}`" in result.stderr


def test_hints_keep_the_users_config(tmp_path: Path) -> None:
    config = tmp_path / "my healthmgr.toml"
    config.write_text(f'[database]\nconnection = "sqlite:///{tmp_path / "e.db"}"\n')
    result = cli("db", "current", "--config", str(config), "-f", "value", "-c", "position")
    assert result.returncode == 0
    assert f"run `healthmgr db upgrade --config '{config}'`" in result.stdout


def test_stamp_records_a_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert in_process(capsys, "db", "upgrade", "--db-url", url).returncode == 0
    assert in_process(capsys, "db", "stamp", "base", "--db-url", url).returncode == 0
    revision = in_process(capsys, "db", "current", "--db-url", url, "-f", "value", "-c", "revision")
    assert revision.stdout == "None\n"
    assert in_process(capsys, "db", "stamp", "head", "--db-url", url).returncode == 0
    assert migrate.current(url) == migrate.head()


def test_unreachable_database_is_one_line_and_exit_4() -> None:
    result = healthmgr("db", "upgrade", "--db-url", "postgresql://hm:s3cret@127.0.0.1:1/hm")
    assert result.returncode == 4
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "healthmgr: error: cannot reach the database (PostgreSQL at 127.0.0.1:1/hm)"
    )
    assert "s3cret" not in result.stderr


def test_bad_config_file_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = in_process(capsys, "db", "current", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 3
    assert "missing.toml" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_ddl_prints_the_checked_in_schema(dialect: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(capsys, "db", "ddl", "--dialect", dialect)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "schema" / f"{dialect}.sql").read_text()


def test_ddl_with_a_bad_dialect_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(capsys, "db", "ddl", "--dialect", "oracle")
    assert result.returncode == 2
    assert "--dialect" in result.stderr
    assert "'oracle'" in result.stderr
    assert result.stdout == ""


def test_bad_db_url_exits_2_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(capsys, "db", "upgrade", "--db-url", "oracle://x@h/db")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "healthmgr: error: --db-url: unsupported database driver 'oracle'"
    )

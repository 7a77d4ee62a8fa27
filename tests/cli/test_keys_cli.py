"""`healthmgr keys ...`: the key an agent is provisioned with, from config or a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import parse_key_text
from healthmgr.wire.keys import MasterKey, derive_amphora_key

ROOT = Path(__file__).resolve().parents[2]
AMPHORA = "6f0a1b2c-3d4e-4f50-8a61-72839405a6b7"
SECRET_1 = "test master secret, 32 bytes ok"
SECRET_2 = "second master key, for rotation"


def expected(key_id: int, secret: str) -> str:
    import uuid

    return derive_amphora_key(MasterKey(key_id, secret.encode()), uuid.UUID(AMPHORA).bytes).hex()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "healthmgr.toml"
    path.write_text(
        f"""
[keys]
active_key_id = 2

[[keys.master]]
id = 1
secret = "{SECRET_1}"

[[keys.master]]
id = 2
secret = "{SECRET_2}"
"""
    )
    return path


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HEALTHMGR_") and name != "HEALTHMGR_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


def run(_capsys: object, *argv: str) -> tuple[int, str, str]:
    from tests.cli.clitest import cli

    done = cli(*argv)
    return done.returncode, done.stdout, done.stderr


def test_derive_uses_the_active_key_of_the_config(config, capsys):
    code, out, _ = run(capsys, "keys", "derive", AMPHORA, "--config", str(config))
    assert code == 0
    assert json.loads(out) == {"amphora_id": AMPHORA, "key_id": 2, "key": expected(2, SECRET_2)}
    # The default output is a key file the agent reads as it is.
    provisioned = parse_key_text(out)
    assert (provisioned.key_id, provisioned.key.hex()) == (2, expected(2, SECRET_2))


def test_derive_with_another_key_id_and_json(config, capsys):
    code, out, _ = run(
        capsys, "keys", "derive", AMPHORA, "--config", str(config), "--key-id", "1", "-f", "json"
    )
    assert code == 0
    assert json.loads(out) == {"amphora_id": AMPHORA, "key_id": 1, "key": expected(1, SECRET_1)}


def test_derive_from_a_master_key_file(tmp_path, capsys):
    secret = tmp_path / "master.key"
    secret.write_text(SECRET_1 + "\n")
    code, out, _ = run(
        capsys,
        "keys",
        "derive",
        AMPHORA.upper(),
        "--master-key-file",
        str(secret),
        "--key-id",
        "1",
        "-f",
        "value",
        "-c",
        "key_id",
        "-c",
        "key",
    )
    assert code == 0
    assert out == f"1\n{expected(1, SECRET_1)}\n"
    assert parse_key_text(out).key_id == 1  # also a key file the agent reads


def test_matches_the_golden_vectors(tmp_path, capsys):
    vectors = json.loads((ROOT / "schema" / "vectors" / "native.json").read_text())
    case = next(
        c for c in vectors["derived_keys"] if c["key_id"] == 1 and c["amphora_id"] == AMPHORA
    )
    secret = tmp_path / "master.key"
    secret.write_bytes(bytes.fromhex(vectors["master_keys"][0]["secret_hex"]))
    code, out, _ = run(
        capsys,
        "keys",
        "derive",
        AMPHORA,
        "--master-key-file",
        str(secret),
        "--key-id",
        "1",
        "-f",
        "value",
        "-c",
        "key",
    )
    assert (code, out.strip()) == (0, case["key_hex"])


DERIVE = ["keys", "derive", AMPHORA]
FROM_FILE = [*DERIVE, "--master-key-file"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["keys", "derive", "not-a-uuid", "--key-id", "1", "--master-key-file", "/dev/null"],
            "AMPHORA_ID: 'not-a-uuid' is not a UUID",
        ),
        ([*FROM_FILE, "/nonexistent/key"], "--key-id N is required"),
        (
            [*FROM_FILE, "/nonexistent/key", "--key-id", "1"],
            "--master-key-file: cannot read /nonexistent/key",
        ),
        ([*FROM_FILE, "/dev/null", "--key-id", "70000"], "--key-id: 70000 is outside"),
        ([*FROM_FILE, "/dev/null", "--key-id", "1"], "--master-key-file: /dev/null is empty"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err


def test_unknown_key_id_in_config(config, capsys):
    code, _, err = run(capsys, "keys", "derive", AMPHORA, "--config", str(config), "--key-id", "9")
    assert code == 2
    assert "--key-id: 9 is not a configured master key id (ids: [1, 2])" in err


def test_config_without_master_keys(tmp_path, capsys):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    code, _, err = run(capsys, "keys", "derive", AMPHORA, "--config", str(empty))
    assert code == 2 and "no [[keys.master]] entries are configured" in err


def test_bad_config_is_one_line_exit_3(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[keys]\nactive_key_id = 5\n")
    code, _, err = run(capsys, "keys", "derive", AMPHORA, "--config", str(bad))
    assert code == 3 and err.startswith("healthmgr: error: invalid configuration")


def test_generate_prints_a_fresh_secret(capsys):
    first = run(capsys, "keys", "generate")[1].strip()
    second = run(capsys, "keys", "generate")[1].strip()
    assert len(first) == 64 and int(first, 16) >= 0 and first != second


def test_real_process(config):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMGR_")}
    environ["PYTHONPATH"] = str(ROOT)
    environ["HEALTHMGR_CONFIG"] = str(config)
    done = subprocess.run(
        [sys.executable, "-m", "healthmgr", "keys", "derive", AMPHORA, "-f", "value", "-c",
         "key_id", "-c", "key"],
        capture_output=True, text=True, timeout=60, env=environ, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"2\n{expected(2, SECRET_2)}\n"

"""Both installs from fresh virtual environments: the amphora's and the manager's.

The wheel is built once; each venv gets it with pip (dependencies from pip's
cache or the index). About 12 s here; `-m "not packaging"` leaves it out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
MANAGER_ONLY = ("sqlalchemy", "psycopg", "pymysql", "prometheus_client", "cliff", "alembic")


def run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves build/ behind, and a stale build/lib
    # could put a deleted module into the wheel.
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("healthmgr", "agent"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src)
    (found,) = out.glob("healthmgr-*.whl")
    return found


def fresh_venv(where: Path, requirement: str) -> Path:
    """A new venv (no pip of its own: this interpreter's pip installs into it).

    ``--no-compile``: pip does not byte-compile every installed module up front (half the
    install's time); what the tests run compiles as it is imported."""
    run(sys.executable, "-m", "venv", "--without-pip", where)
    python = where / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile")
    run(*pip, requirement)
    return where / "bin"


def importable(bin_dir: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return run(bin_dir / "python", "-c", code, check=False).returncode == 0


def test_the_amphora_install_has_the_agent_and_no_manager(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "amphora", str(wheel))
    assert run(bin_dir / "amphora-agent", "--version").stdout.strip() == "amphora-agent 0.1.0"
    # Every module the agent runs, and the codec it signs with.
    run(bin_dir / "python", "-c", "import agent.main, healthmgr.wire.native, healthmgr.wire.keys")
    found = [m for m in MANAGER_ONLY if importable(bin_dir, m)]
    assert found == [], f"the amphora install pulled in {found}"
    done = run(bin_dir / "healthmgr", "--version", check=False)
    assert done.returncode == 2
    assert "pip install 'healthmgr[manager]'" in done.stderr


def test_the_manager_install_has_everything(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "manager", f"healthmgr[manager] @ {wheel.as_uri()}")
    assert run(bin_dir / "healthmgr", "--version").stdout.strip() == "healthmgr 0.1.0"
    assert run(bin_dir / "amphora-agent", "--version").returncode == 0
    assert all(importable(bin_dir, m) for m in MANAGER_ONLY)
    # The migrations ship in the wheel: the schema can be created from it.
    db = tmp_path / "hm.db"
    env_config = tmp_path / "hm.toml"
    env_config.write_text(f'[database]\nconnection = "sqlite:///{db}"\n')
    run(bin_dir / "healthmgr", "db", "upgrade", "--config", env_config)
    assert db.exists()

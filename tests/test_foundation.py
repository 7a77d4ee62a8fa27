"""The project's own plumbing: the service fixtures. (`python -m healthmgr` itself:
tests/cli/test_app.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text


def test_fresh_database_is_reachable_and_empty(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_haproxy_is_installed(haproxy_bin: str) -> None:
    out = subprocess.run([haproxy_bin, "-v"], capture_output=True, text=True, check=True)
    assert "HAProxy version" in out.stdout


def test_every_test_directory_is_a_package() -> None:
    """Test modules are named by their path (tests.agent.test_main), so basenames may repeat
    and no directory is put on sys.path: a directory without __init__.py would bring back
    the basename clashes ("import file mismatch") and the bare imports of a sibling
    conftest that made `pytest tests/agent tests/manager` fail at collection."""
    tests = Path(__file__).resolve().parent
    dirs = {p.parent for p in tests.rglob("*.py") if p.name.startswith(("test_", "conftest"))}
    assert dirs, "no tests found"
    missing = sorted(str(d.relative_to(tests)) for d in dirs if not (d / "__init__.py").is_file())
    assert missing == []

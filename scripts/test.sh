#!/usr/bin/env bash
# Set everything up and run the test suite. Extra arguments go to pytest.
# PYTHON picks the interpreter (default python3; its venv: scripts/venv_dir.sh).
# HEALTHMGR_REQUIRE_SERVICES=1 turns a missing PostgreSQL, MariaDB or HAProxy
# into a test failure instead of a skip (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --services
VENV=$(scripts/venv_dir.sh)
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
# Bytecode caches on, whatever the environment says: with PYTHONDONTWRITEBYTECODE set,
# each of the four workers rewrote and compiled every test module again (about 2 s of
# CPU each, all four at once on the start), and every daemon, CLI and tool the tests
# start compiled healthmgr again. The caches (__pycache__/) are ignored by git.
unset PYTHONDONTWRITEBYTECODE
exec "$VENV/bin/pytest" "$@"

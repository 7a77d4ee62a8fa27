#!/usr/bin/env bash
# Set everything up and run the test suite. Extra arguments go to pytest.
# HEALTHMGR_REQUIRE_SERVICES=1 turns a missing PostgreSQL, MariaDB or HAProxy
# into a test failure instead of a skip (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --services
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"

#!/usr/bin/env bash
# Set everything up, then run the seed-scenario demo on SQLite with a real
# HAProxy, the real manager and the real agent (scripts/demo.py, docs/demo.md).
# Arguments go to the demo: --keep-dir, --haproxy PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"

#!/usr/bin/env bash
# Set everything up and run the main job. Until the seed-scenario demo lands,
# this runs what exists: the manager's command line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/healthmgr --help

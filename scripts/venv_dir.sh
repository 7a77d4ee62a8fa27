#!/usr/bin/env bash
# The virtual environment of the Python that $PYTHON names (default python3): .venv for
# python3's own version, .venv-X.Y for another one (CI runs the suite on 3.11, 3.12, 3.13).
set -euo pipefail
version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
want=$(version "${PYTHON:-python3}")
if [ "$want" = "$(version python3)" ]; then echo .venv; else echo ".venv-$want"; fi

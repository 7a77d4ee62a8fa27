#!/usr/bin/env bash
# The separate virtual environment with OpenStack Octavia 19.0.0, for the tests
# that compare healthmgr with Octavia's own code (tests/octavia/). Octavia is
# never a dependency of healthmgr: it lives in .venv-octavia, pinned by
# tests/octavia/octavia-constraints.txt (what `pip freeze` gave when the tests
# were written), and is only ever run as a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."

# Not $PYTHON: Octavia's pins are for the default python3 (healthmgr runs it as a
# subprocess, whichever Python runs the tests). OCTAVIA_PYTHON overrides.
PY=${OCTAVIA_PYTHON:-python3}
VENV=.venv-octavia
CONSTRAINTS=tests/octavia/octavia-constraints.txt
stamp=$VENV/.installed-$(sha1sum "$CONSTRAINTS" | cut -c1-12)
[ -f "$stamp" ] && exit 0
# One installer at a time: pytest's parallel workers may all ask for it at once.
mkdir -p "$VENV"
exec 9<"$VENV"
flock 9
[ -f "$stamp" ] && exit 0
echo "setup: installing octavia==19.0.0 into $VENV (for tests/octavia)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" octavia==19.0.0 PyMySQL
rm -f "$VENV"/.installed-*
touch "$stamp"

"""``amphora-agent`` entry point."""

from __future__ import annotations

import sys


def main() -> int:
    print("amphora-agent: not implemented yet", file=sys.stderr)
    return 1

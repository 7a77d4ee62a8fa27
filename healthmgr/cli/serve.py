"""`healthmgr serve` (placeholder until its owner fills it in)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("serve", help="(not implemented yet)").set_defaults(func=lambda args: 1)

"""Per-amphora keys derived from master keys (stub: the wire work fills this in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: int
    secret: bytes

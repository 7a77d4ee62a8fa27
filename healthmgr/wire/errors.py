"""Why a datagram was rejected: a fixed set, counted in metrics."""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"
    OVER_LIMIT = "over_limit"
    REPLAYED = "replayed"
    STALE = "stale"
    FUTURE = "future"


class Rejected(Exception):
    """The one exception the decoders raise for any bad input."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

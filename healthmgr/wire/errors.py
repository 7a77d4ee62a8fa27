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
    # Native header naming an amphora the manager's fleet does not list, beyond
    # the budget of key derivations for amphorae created since the fleet loaded.
    UNLISTED = "unlisted"
    # Octavia's format from an amphora that has spoken the native one.
    DOWNGRADE = "downgrade"


class Rejected(Exception):
    """The one exception the decoders raise for any bad input."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        # A flood is rejected one exception at a time: the message is built
        # only when read (an enum's .value alone costs ~2,300 instructions).
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

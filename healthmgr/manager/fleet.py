"""The amphorae this manager knows, and which of them have spoken the native format.

Pure state, filled from the database by ``fleet_loader`` and read by the
decoder on every datagram: a native datagram that names an amphora outside
the fleet costs no key derivation (only a small budget of them does, for
amphorae created since the last load), and an amphora that has spoken native
is never accepted in Octavia's format again (no downgrade).
"""

from __future__ import annotations

from collections.abc import Iterable

from healthmgr.wire.ids import Id


class Fleet:
    """Known amphora ids (16 raw bytes) and the native speakers among them.

    Until the first ``replace`` the fleet is not ``loaded``: the decoder then
    treats every id as known (a manager whose database is down at start keeps
    its old behaviour instead of starving the whole fleet).
    """

    __slots__ = ("_known", "_native", "loaded")

    def __init__(self) -> None:
        self._known: set[Id] = set()
        self._native: set[Id] = set()
        self.loaded = False

    def known(self, amphora_id: Id) -> bool:
        return amphora_id in self._known

    def native(self, amphora_id: Id) -> bool:
        return amphora_id in self._native

    def replace(self, known_ids: Iterable[Id], native_ids: Iterable[Id]) -> None:
        """A fresh load from the database. Native marks made here since are kept
        for amphorae still known: the database may not have them yet."""
        known = set(known_ids)
        self._native = set(native_ids) | (self._native & known)
        self._known = known
        self.loaded = True

    def add(self, amphora_id: Id) -> None:
        """An amphora not in the last load proved it holds its key."""
        self._known.add(amphora_id)

    def mark_native(self, amphora_id: Id) -> bool:
        """A native heartbeat of this amphora verified; True the first time."""
        if amphora_id in self._native:
            return False
        self._native.add(amphora_id)
        return True

    def __len__(self) -> int:
        return len(self._known)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; the clock is passed in (ms)."""

    __slots__ = ("_at_ms", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.rate = rate
        if burst is None:
            burst = max(1.0, rate) if rate > 0 else 0.0  # rate 0: never
        self.burst = burst
        self._tokens = self.burst
        self._at_ms: int | None = None

    def take(self, now_ms: int) -> bool:
        if self._at_ms is not None and now_ms > self._at_ms:
            self._tokens = min(self.burst, self._tokens + (now_ms - self._at_ms) * self.rate / 1000)
        if self._at_ms is None or now_ms > self._at_ms:
            self._at_ms = now_ms
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

"""Per-amphora heartbeat keys derived from master keys.

Each amphora is provisioned with its own key, HKDF-SHA256(master secret,
amphora id), so a compromised amphora cannot sign for another. The managers hold
the master keys and derive on demand; :class:`Keyring` caches the derived keys
because the manager needs one per datagram. Several master keys are accepted at
once (each datagram names its key id) so a key rotates without a lost heartbeat.
Parameters: schema/heartbeat.md, "Keys".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.limits import ID_BYTES, MAX_KEY_ID

HKDF_SALT = b"healthmgr heartbeat key v1"
HKDF_INFO_LABEL = b"amphora"
KEY_BYTES = 32
MIN_MASTER_SECRET_BYTES = 16
# Derived keys cached per master key. One entry costs about 200 bytes; the
# default holds a fleet of a million amphorae, so steady traffic never misses.
DEFAULT_CACHE_SIZE = 1 << 20

_KEY_ID = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: int
    secret: bytes


class KeyLookup(Protocol):
    """What the decoder needs: the per-amphora key named by a datagram's header."""

    def key_for(self, key_id: int, amphora_id: bytes) -> bytes | Rejected:
        """The 32-byte key, or raise ``Rejected(Reason.UNKNOWN_KEY)``. A lookup
        with a policy of its own may return a ``Rejected`` instead of raising
        it: ``check_envelope`` returns that as is (a flood is cheaper so)."""
        ...


def hkdf_info(key_id: int, amphora_id: bytes) -> bytes:
    """HKDF ``info``: label, the master key id (uint16 big-endian), the raw amphora id."""
    return HKDF_INFO_LABEL + _KEY_ID.pack(key_id) + amphora_id


def derive_amphora_key(master: MasterKey, amphora_id: bytes) -> bytes:
    """The key amphora ``amphora_id`` signs with under ``master`` (32 bytes)."""
    _check_master(master)
    if type(amphora_id) is not bytes or len(amphora_id) != ID_BYTES:
        raise ValueError(f"amphora id must be {ID_BYTES} raw bytes, got {amphora_id!r}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=HKDF_SALT,
        info=hkdf_info(master.id, amphora_id),
    )
    return hkdf.derive(master.secret)


def _check_master(master: MasterKey) -> None:
    if not 0 <= master.id <= MAX_KEY_ID:
        raise ValueError(f"master key id {master.id} is outside 0..{MAX_KEY_ID}")
    if len(master.secret) < MIN_MASTER_SECRET_BYTES:
        raise ValueError(
            f"master key {master.id}: secret is {len(master.secret)} bytes; "
            f"at least {MIN_MASTER_SECRET_BYTES} are required"
        )


class Keyring:
    """The master keys a manager accepts, with a bounded cache of derived keys.

    ``key_for`` is the :class:`KeyLookup` the decoder calls per datagram: a
    dict hit on the hot path, one HKDF (a few microseconds) on a miss. When a
    cache is full its oldest entry goes (insertion order): with every amphora
    sending at the same rate, recency would buy nothing over that.
    """

    __slots__ = ("_cache_size", "_caches", "_masters", "active_id")

    def __init__(
        self,
        masters: Iterable[MasterKey],
        active_id: int | None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._masters: dict[int, MasterKey] = {}
        for master in masters:
            _check_master(master)
            if master.id in self._masters:
                raise ValueError(f"master key id {master.id} is given twice")
            self._masters[master.id] = master
        if active_id is not None and active_id not in self._masters:
            raise ValueError(
                f"active key id {active_id} is not among the master keys {sorted(self._masters)}"
            )
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.active_id = active_id
        self._cache_size = cache_size
        self._caches: dict[int, dict[bytes, bytes]] = {kid: {} for kid in self._masters}

    @property
    def masters(self) -> tuple[MasterKey, ...]:
        """The master keys, by id: equal tuples derive equal keys."""
        return tuple(self._masters[kid] for kid in sorted(self._masters))

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._masters))

    def key_for(self, key_id: int, amphora_id: bytes) -> bytes:
        cache = self._caches.get(key_id)
        if cache is None:
            raise Rejected(Reason.UNKNOWN_KEY, f"key id {key_id} is not configured")
        key = cache.get(amphora_id)
        if key is None:
            key = derive_amphora_key(self._masters[key_id], amphora_id)
            self._remember(cache, amphora_id, key)
        return key

    def cached_key(self, key_id: int, amphora_id: bytes) -> bytes | None:
        cache = self._caches.get(key_id)
        return None if cache is None else cache.get(amphora_id)

    def uncached(self) -> _Uncached:
        """A lookup that derives without caching, for datagrams not yet verified
        from an amphora not yet seen: forged floods of random ids then cannot
        evict the keys of the real fleet. ``remember`` the key once verified."""
        return _Uncached(self)

    def remember(self, key_id: int, amphora_id: bytes, key: bytes) -> None:
        cache = self._caches.get(key_id)
        if cache is not None:
            self._remember(cache, amphora_id, key)

    def _remember(self, cache: dict[bytes, bytes], amphora_id: bytes, key: bytes) -> None:
        if len(cache) >= self._cache_size:
            del cache[next(iter(cache))]
        cache[amphora_id] = key

    def provision(self, amphora_id: bytes) -> tuple[int, bytes]:
        """(key id, key) an agent is given: derived from the active master key."""
        if self.active_id is None:
            raise ValueError("no active master key: configure keys.active_key_id")
        return self.active_id, derive_amphora_key(self._masters[self.active_id], amphora_id)

    def cached(self) -> int:
        """How many derived keys are cached (all master keys together)."""
        return sum(len(cache) for cache in self._caches.values())


class _Uncached:
    __slots__ = ("_ring", "last")

    def __init__(self, ring: Keyring) -> None:
        self._ring = ring
        self.last = b""  # the key most recently handed out

    def key_for(self, key_id: int, amphora_id: bytes) -> bytes:
        key = self._ring.cached_key(key_id, amphora_id)
        if key is not None:
            return key
        master = self._ring._masters.get(key_id)
        if master is None:
            raise Rejected(Reason.UNKNOWN_KEY, f"key id {key_id} is not configured")
        self.last = derive_amphora_key(master, amphora_id)
        return self.last

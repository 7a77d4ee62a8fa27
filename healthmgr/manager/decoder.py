"""Datagram -> verified, fresh, not-replayed heartbeat (or ``Rejected``).

Composes the wire pieces with the manager's keys, fleet and clock. The native
format is always on; Octavia's when ``octavia_compat`` is set.

Key derivation (one HKDF, the dearest step of a rejection) happens only for
amphorae of the fleet, whose keys are then cached, and for a few unlisted ids
a second (``unlisted_derive_rate``): amphorae created since the fleet was last
loaded. Anything beyond is rejected as ``unlisted`` before any cryptography.
"""

from __future__ import annotations

from collections.abc import Callable

from healthmgr.config import Settings
from healthmgr.manager.fleet import Fleet, TokenBucket
from healthmgr.wire import octavia
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.keys import Keyring
from healthmgr.wire.native import MAGIC, check_native
from healthmgr.wire.replay import OctaviaArrival, OctaviaSequences, ReplayGuard, check_freshness
from healthmgr.wire.values import Heartbeat

# (amphora id, highest seq of the previous run, first seq seen of the new one)
OnRestart = Callable[[bytes, int | None, int], None]

# What a flood is made of is rejected with shared values, returned and never
# raised (also envelope.BAD_TAG): making and raising the exception cost 6,300
# of the 27,000 instructions a bad magic took in the receive path, 8,300 of
# 47,000 for an unlisted id, 8,000 of 70,000 for a forgery of a fleet
# amphora (tests/bench/reject.py under callgrind, docs/performance.md).
_NOT_NATIVE = Rejected(Reason.BAD_MAGIC, "not a native heartbeat (octavia_compat is off)")
_UNLISTED = Rejected(Reason.UNLISTED, "amphora not in the fleet; derivation budget spent")


class Decoder:
    def __init__(
        self,
        keyring: Keyring,
        *,
        octavia_key: bytes | None,
        max_age_ms: int,
        max_future_ms: int,
        fleet: Fleet | None = None,
        unlisted_rate: float = 20.0,
        duplicate_ms: int = 5_000,
    ) -> None:
        self.keyring = keyring
        self.octavia_key = octavia_key
        self.max_age_ms = max_age_ms
        self.max_future_ms = max_future_ms
        self.fleet = fleet if fleet is not None else Fleet()
        self.unlisted = TokenBucket(unlisted_rate)
        self.replay = ReplayGuard()
        self.octavia_seqs = OctaviaSequences(duplicate_ms)
        self.on_restart: OnRestart = lambda amphora_id, previous, seq: None
        # Per native datagram, for key_for: its arrival, and the key derived
        # for an unlisted amphora, cached once its tag held.
        self._now_ms = 0
        self._first_contact: tuple[int, bytes, bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, fleet: Fleet | None = None) -> Decoder:
        hm = settings.health_manager
        return cls(
            Keyring(settings.keys.master_keys, settings.keys.active_key_id),
            octavia_key=_octavia_key(settings),
            # A heartbeat older than one interval plus the skew proves nothing new.
            max_age_ms=int((hm.heartbeat_interval + hm.max_clock_skew) * 1000),
            max_future_ms=int(hm.max_clock_skew * 1000),
            fleet=fleet,
            unlisted_rate=hm.unlisted_derive_rate,
            # An Octavia agent sends one seq per interval: the same seq within
            # half an interval is the network's duplicate, not the agent's.
            duplicate_ms=int(hm.heartbeat_interval * 500),
        )

    def update(self, settings: Settings) -> None:
        """SIGHUP: new master keys and Octavia key; replay state and the fleet are
        kept, and so are the derived keys when the master keys did not change."""
        fresh = Decoder.from_settings(settings)
        if fresh.keyring.masters != self.keyring.masters:
            self.keyring = fresh.keyring
        else:
            self.keyring.active_id = fresh.keyring.active_id
        self.octavia_key = fresh.octavia_key
        self.max_age_ms = fresh.max_age_ms
        self.max_future_ms = fresh.max_future_ms
        self.unlisted = fresh.unlisted
        self.octavia_seqs.duplicate_ms = fresh.octavia_seqs.duplicate_ms

    def decode(self, datagram: bytes, now_ms: int) -> tuple[Heartbeat, bool] | Rejected:
        """The heartbeat and whether it is its amphora's newest so far.

        Only a newest heartbeat may change statuses: a reordered older one
        (still inside the replay window) proves life and carries counters,
        but its statuses are out of date. Why not: a ``Rejected`` returned for
        a bad magic, an unlisted amphora or a bad tag (what a flood is made
        of), raised for every other reason (catching and returning those would
        cost more: the caught exception's frames outlive their functions)."""
        if datagram[:3] == MAGIC:
            hb = self._native(datagram, now_ms)
            if hb.__class__ is Rejected:
                return hb
            # Signed with its own key: this amphora can never be downgraded.
            self.fleet.mark_native(hb.amphora_id)
            check_freshness(
                hb.sent_at_ms, now_ms, max_age_ms=self.max_age_ms, max_future_ms=self.max_future_ms
            )
            return hb, self.replay.check_and_update(hb.amphora_id, hb.seq)
        if self.octavia_key is None:
            return _NOT_NATIVE
        hb = octavia.decode(datagram, self.octavia_key, received_at_ms=now_ms)
        if self.fleet.native(hb.amphora_id):
            raise Rejected(
                Reason.DOWNGRADE, f"amphora {hb.amphora_id.hex()} speaks the native format"
            )
        return hb, self._octavia_sequence(hb, now_ms)

    def _native(self, datagram: bytes, now_ms: int) -> Heartbeat | Rejected:
        self._now_ms = now_ms
        self._first_contact = None
        hb = check_native(datagram, self)
        if self._first_contact is not None and hb.__class__ is not Rejected:
            key_id, amphora_id, key = self._first_contact
            self.keyring.remember(key_id, amphora_id, key)
            if self.fleet.loaded:
                self.fleet.add(amphora_id)
        return hb

    def key_for(self, key_id: int, amphora_id: bytes) -> bytes | Rejected:
        """The KeyLookup ``check_native`` asks, with the fleet's policy. One lookup
        per datagram in the common case (the header is not parsed twice)."""
        key = self.keyring.cached_key(key_id, amphora_id)
        if key is not None:
            return key
        fleet = self.fleet
        if fleet.loaded:
            if fleet.known(amphora_id):
                # Derived and cached before the tag is checked: the fleet bounds the cache.
                return self.keyring.key_for(key_id, amphora_id)
            if not self.unlisted.take(self._now_ms):
                return _UNLISTED
        # First contact with an unlisted id: its key is cached only once the tag
        # held (_native), so forgeries for random ids cannot evict the fleet's keys.
        key = self.keyring.uncached().key_for(key_id, amphora_id)
        self._first_contact = (key_id, amphora_id, key)
        return key

    def _octavia_sequence(self, hb: Heartbeat, now_ms: int) -> bool:
        """Duplicates are dropped, restarts accepted at once (OctaviaSequences)."""
        previous = self.octavia_seqs.highest(hb.amphora_id)
        arrival = self.octavia_seqs.check_and_update(hb.amphora_id, hb.seq, now_ms)
        if arrival is OctaviaArrival.RESTART:
            self.on_restart(hb.amphora_id, previous, hb.seq)
        return arrival is not OctaviaArrival.REORDERED


def _octavia_key(settings: Settings) -> bytes | None:
    hm = settings.health_manager
    if not hm.octavia_compat:
        return None
    key = hm.heartbeat_key
    if not key:
        raise ValueError("octavia_compat needs health_manager.heartbeat_key")
    return key.encode()

"""Per-amphora key derivation and the manager's Keyring."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.keys import Keyring, MasterKey, derive_amphora_key
from tests.wire.native_samples import AMPHORA, MASTER, MASTER_2, uid


def test_derivation_follows_the_spec_parameters():
    info = b"amphora" + MASTER.id.to_bytes(2, "big") + AMPHORA
    expected = HKDF(hashes.SHA256(), 32, b"healthmgr heartbeat key v1", info).derive(MASTER.secret)
    assert derive_amphora_key(MASTER, AMPHORA) == expected


def test_keys_differ_per_amphora_per_master_and_per_key_id():
    keys = {
        derive_amphora_key(MASTER, AMPHORA),
        derive_amphora_key(MASTER, uid(1)),
        derive_amphora_key(MASTER_2, AMPHORA),
        derive_amphora_key(MasterKey(9, MASTER.secret), AMPHORA),  # same secret, other id
    }
    assert len(keys) == 4 and all(len(k) == 32 for k in keys)


def test_keyring_caches_and_bounds_the_cache():
    ring = Keyring([MASTER], active_id=1, cache_size=2)
    first = ring.key_for(1, AMPHORA)
    assert ring.key_for(1, AMPHORA) is first
    ring.key_for(1, uid(1))
    ring.key_for(1, uid(2))
    assert ring.cached() == 2
    assert ring.key_for(1, AMPHORA) == first  # evicted, derived again, same key


def test_unknown_key_id_is_rejected():
    with pytest.raises(Rejected) as info:
        Keyring([MASTER], active_id=None).key_for(7, AMPHORA)
    assert info.value.reason is Reason.UNKNOWN_KEY


def test_provision_uses_the_active_key():
    ring = Keyring([MASTER, MASTER_2], active_id=2)
    assert ring.provision(AMPHORA) == (2, derive_amphora_key(MASTER_2, AMPHORA))
    with pytest.raises(ValueError, match="no active master key"):
        Keyring([MASTER], active_id=None).provision(AMPHORA)


@pytest.mark.parametrize(
    ("masters", "active", "message"),
    [
        ([MASTER, MasterKey(1, b"y" * 32)], 1, "given twice"),
        ([MASTER], 3, "active key id 3"),
        ([MasterKey(1, b"short")], 1, "at least 16"),
        ([MasterKey(70000, b"y" * 32)], None, "outside"),
    ],
)
def test_bad_keyrings_are_refused(masters, active, message):
    with pytest.raises(ValueError, match=message):
        Keyring(masters, active)


def test_amphora_id_must_be_raw_uuid_bytes():
    with pytest.raises(ValueError, match="16 raw bytes"):
        derive_amphora_key(MASTER, b"6f0a1b2c")


def test_uncached_lookup_derives_without_filling_the_cache() -> None:
    from healthmgr.wire.keys import Keyring, MasterKey, derive_amphora_key

    master = MasterKey(1, b"a master secret of some length")
    ring = Keyring([master], 1)
    amp = bytes(range(16))
    lookup = ring.uncached()
    assert lookup.key_for(1, amp) == derive_amphora_key(master, amp)
    assert ring.cached() == 0
    ring.remember(1, amp, lookup.last)
    assert ring.cached_key(1, amp) == derive_amphora_key(master, amp)

"""The decoder's fleet (known and native amphorae) and the derivation budget."""

from __future__ import annotations

import pytest

from healthmgr.manager.fleet import Fleet, TokenBucket

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def test_a_new_fleet_is_empty_and_not_loaded():
    fleet = Fleet()
    assert not fleet.loaded and len(fleet) == 0
    assert not fleet.known(A) and not fleet.native(A)


def test_replace_loads_known_and_native_ids():
    fleet = Fleet()
    fleet.replace([A, B], [B])
    assert fleet.loaded and len(fleet) == 2
    assert fleet.known(A) and fleet.known(B) and not fleet.known(C)
    assert fleet.native(B) and not fleet.native(A)


def test_replace_drops_amphorae_no_longer_listed():
    fleet = Fleet()
    fleet.replace([A, B], [A, B])
    fleet.replace([B], [])
    assert not fleet.known(A) and not fleet.native(A)


def test_native_marks_survive_a_load_that_does_not_have_them_yet():
    # The database learns "spoke native" at the next flush; a load in between
    # must not open a window for a downgrade.
    fleet = Fleet()
    fleet.replace([A, B], [])
    assert fleet.mark_native(A)
    fleet.replace([A, B], [])
    assert fleet.native(A) and not fleet.native(B)


def test_mark_native_says_whether_it_is_new():
    fleet = Fleet()
    assert fleet.mark_native(A) is True
    assert fleet.mark_native(A) is False
    assert fleet.native(A)


def test_add_makes_an_amphora_known_until_the_next_load():
    fleet = Fleet()
    fleet.replace([A], [])
    fleet.add(C)
    assert fleet.known(C) and len(fleet) == 2
    fleet.replace([A, C], [])
    assert fleet.known(C)


def test_bucket_gives_its_burst_then_its_rate():
    bucket = TokenBucket(rate=20)
    assert sum(bucket.take(1_000) for _ in range(50)) == 20
    assert not bucket.take(1_000)
    assert not bucket.take(1_049)  # 0.98 of a token
    assert bucket.take(1_050) and not bucket.take(1_050)
    # A long pause refills only up to the burst.
    assert sum(bucket.take(100_000) for _ in range(50)) == 20


def test_bucket_with_rate_zero_never_gives():
    bucket = TokenBucket(rate=0)
    assert not any(bucket.take(t) for t in (0, 1_000, 10**9))


def test_bucket_ignores_a_clock_that_steps_back():
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(10_000)
    assert not bucket.take(5_000)  # no refill from going backwards
    assert not bucket.take(10_500)
    assert bucket.take(11_000)


def test_bucket_rejects_a_negative_rate():
    with pytest.raises(ValueError):
        TokenBucket(rate=-1)

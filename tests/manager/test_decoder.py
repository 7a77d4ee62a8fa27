"""The manager's decoder: fleet-gated key derivation. In process, real keys
and real datagrams."""

from __future__ import annotations

import os
import time

import pytest

from healthmgr.manager.decoder import Decoder
from healthmgr.manager.fleet import Fleet
from healthmgr.wire import keys as keys_module
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.keys import Keyring
from tests.manager.harness import MASTER, Agent

OCTAVIA_KEY = b"octavia shared heartbeat key"
NOW = int(time.time() * 1000)  # native heartbeats carry the wall clock


def agent() -> Agent:
    return Agent(os.urandom(16), os.urandom(16), os.urandom(16), (os.urandom(16),))


def decoder(fleet: Fleet | None = None, *, unlisted_rate: float = 2.0) -> Decoder:
    return Decoder(
        Keyring([MASTER], MASTER.id),
        octavia_key=OCTAVIA_KEY,
        max_age_ms=60_000,
        max_future_ms=60_000,
        fleet=fleet,
        unlisted_rate=unlisted_rate,
    )


def forged(datagram: bytes) -> bytes:
    return datagram[:-32] + bytes(32)


def reason(dec: Decoder, datagram: bytes, now: int = NOW) -> Reason | None:
    try:
        dec.decode(datagram, now)
    except Rejected as exc:
        return exc.reason
    return None


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Amphora ids a key was derived for (the real HKDF still runs)."""
    calls: list[bytes] = []
    real = keys_module.derive_amphora_key

    def counting(master: keys_module.MasterKey, amphora_id: bytes) -> bytes:
        calls.append(amphora_id)
        return real(master, amphora_id)

    monkeypatch.setattr(keys_module, "derive_amphora_key", counting)
    return calls


def test_listed_amphora_is_derived_once_even_for_forgeries(derivations: list[bytes]):
    a = agent()
    fleet = Fleet()
    fleet.replace([a.amphora], [])
    dec = decoder(fleet)
    assert reason(dec, forged(a.datagram())) is Reason.BAD_SIGNATURE
    assert reason(dec, forged(a.datagram())) is Reason.BAD_SIGNATURE
    assert reason(dec, a.datagram()) is None
    assert derivations == [a.amphora]


def test_unlisted_ids_get_only_the_derivation_budget(derivations: list[bytes]):
    fleet = Fleet()
    fleet.replace([], [])
    dec = decoder(fleet, unlisted_rate=2.0)
    strangers = [forged(agent().datagram()) for _ in range(10)]
    reasons = [reason(dec, d) for d in strangers]
    assert reasons == [Reason.BAD_SIGNATURE] * 2 + [Reason.UNLISTED] * 8
    assert len(derivations) == 2
    assert dec.keyring.cached() == 0  # forgeries never cache a key
    # The budget refills with time: one more a half second later.
    assert reason(dec, forged(agent().datagram()), NOW + 500) is Reason.BAD_SIGNATURE
    assert reason(dec, forged(agent().datagram()), NOW + 500) is Reason.UNLISTED


def test_new_amphora_gets_in_through_the_budget_and_joins_the_fleet(derivations: list[bytes]):
    fleet = Fleet()
    fleet.replace([], [])
    dec = decoder(fleet, unlisted_rate=1.0)
    newcomer = agent()
    hb, newest = dec.decode(newcomer.datagram(), NOW)
    assert hb.amphora_id == newcomer.amphora and newest
    assert fleet.known(newcomer.amphora)
    # Spend the budget on a stranger: the newcomer still gets in (key cached).
    assert reason(dec, forged(agent().datagram())) is Reason.UNLISTED
    assert reason(dec, newcomer.datagram()) is None
    assert derivations == [newcomer.amphora]


def test_before_the_first_fleet_load_nothing_is_unlisted():
    dec = decoder(Fleet(), unlisted_rate=0.0)
    assert all(reason(dec, forged(agent().datagram())) is Reason.BAD_SIGNATURE
               for _ in range(5))
    assert reason(dec, agent().datagram()) is None


def test_sighup_update_keeps_the_fleet_and_replay_state():
    from healthmgr.config import Settings

    fleet = Fleet()
    fleet.replace([b"x" * 16], [b"x" * 16])
    dec = decoder(fleet)
    a = agent()
    dec.decode(a.datagram(seq=7), NOW)
    settings = Settings.model_validate({
        "keys": {"master": [{"id": MASTER.id, "secret": MASTER.secret.decode()}]},
        "health_manager": {"unlisted_derive_rate": 5},
    })
    dec.update(settings)
    assert dec.fleet is fleet and fleet.native(b"x" * 16)
    assert dec.unlisted.rate == 5
    assert reason(dec, a.datagram(seq=7), NOW + 1) is Reason.REPLAYED

"""The manager's decoder: fleet-gated key derivation, downgrade protection,
Octavia agent restarts. In process, real keys and real datagrams."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from healthmgr.manager.decoder import Decoder
from healthmgr.manager.fleet import Fleet
from healthmgr.wire import keys as keys_module
from healthmgr.wire import octavia
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.keys import Keyring
from tests.manager.harness import MASTER, Agent

OCTAVIA_KEY = b"octavia shared heartbeat key"
NOW = int(time.time() * 1000)  # native heartbeats carry the wall clock
INTERVAL_MS = 1_000


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
        duplicate_ms=INTERVAL_MS // 2,
    )


def octavia_datagram(a: Agent, seq: int) -> bytes:
    hb = dataclasses.replace(a.heartbeat(), seq=seq)
    return octavia.encode(octavia.heartbeat_to_message(hb, 2), OCTAVIA_KEY)


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


def test_a_verified_native_heartbeat_marks_its_amphora_native():
    fleet = Fleet()
    dec = decoder(fleet)
    a = agent()
    assert reason(dec, forged(a.datagram())) is Reason.BAD_SIGNATURE
    assert not fleet.native(a.amphora)
    dec.decode(a.datagram(), NOW)
    assert fleet.native(a.amphora)


def test_octavia_heartbeat_after_native_is_a_downgrade():
    dec = decoder()
    a = agent()
    captured = octavia_datagram(a, 1)
    assert reason(dec, captured) is None  # before native: accepted
    dec.decode(a.datagram(), NOW + 1)
    assert reason(dec, captured, NOW + 10_000) is Reason.DOWNGRADE
    assert reason(dec, octavia_datagram(a, 500), NOW + 20_000) is Reason.DOWNGRADE


def test_octavia_heartbeat_of_an_amphora_the_database_knows_as_native_is_a_downgrade():
    a = agent()
    fleet = Fleet()
    fleet.replace([a.amphora], [a.amphora])
    assert reason(decoder(fleet), octavia_datagram(a, 0)) is Reason.DOWNGRADE


def test_octavia_agent_restart_is_accepted_at_once_and_reported():
    dec = decoder()
    restarts: list[tuple[bytes, int | None, int]] = []
    dec.on_restart = lambda amphora, previous, seq: restarts.append((amphora, previous, seq))
    a = agent()
    for seq in range(4):
        assert dec.decode(octavia_datagram(a, seq), NOW + seq * INTERVAL_MS)[1]
    _hb, newest = dec.decode(octavia_datagram(a, 0), NOW + 4 * INTERVAL_MS)
    assert newest
    assert restarts == [(a.amphora, 3, 0)]


def test_octavia_network_duplicate_is_replayed():
    dec = decoder()
    a = agent()
    datagram = octavia_datagram(a, 5)
    dec.decode(datagram, NOW)
    assert reason(dec, datagram, NOW + 10) is Reason.REPLAYED


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


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))


def test_restart_log_names_each_amphora_once_per_interval_and_counts_the_rest():
    from healthmgr.manager.ingest import RestartLog

    now = [100.0]
    sink = _Lines()
    log = RestartLog(10.0, lines=2, clock=lambda: now[0], logger=sink)
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    log.restart(a, 7, 0)
    log.restart(a, 3, 0)  # the same amphora again: held back
    log.restart(b, None, 0)
    log.restart(c, 9, 1)  # beyond the lines of this interval: held back
    assert [(e, f.get("seq"), f.get("previous_seq")) for e, f in sink.lines] == [
        ("octavia agent restarted", 0, 7), ("octavia agent restarted", 0, None)]
    assert sink.lines[0][1]["amphora_id"] == "61616161-6161-6161-6161-616161616161"
    now[0] += 10
    log.flush()
    assert sink.lines[-1] == ("octavia agent restarts not logged",
                              {"suppressed": 2, "summary": True})
    log.restart(c, 9, 1)
    assert sink.lines[-1][0] == "octavia agent restarted"

"""The manager's decoder: fleet-gated key derivation, downgrade protection,
Octavia agent restarts. In process, real keys and real datagrams."""

from __future__ import annotations

import os
import time

import msgspec
import pytest

from healthmgr.manager.decoder import Decoder
from healthmgr.manager.fleet import Fleet
from healthmgr.wire import keys as keys_module
from healthmgr.wire import octavia
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.keys import Keyring
from tests.manager.harness import MASTER, Agent

OCTAVIA_KEY = b"octavia shared heartbeat key"
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
    hb = msgspec.structs.replace(a.heartbeat(), seq=seq)
    return octavia.encode(octavia.heartbeat_to_message(hb, 2), OCTAVIA_KEY)


def forged(datagram: bytes) -> bytes:
    return datagram[:-32] + bytes(32)


def wall_ms() -> int:
    """Now, as the receiver passes it (native heartbeats carry the wall clock)."""
    return int(time.time() * 1000)


def reason(dec: Decoder, datagram: bytes, now: int | None = None) -> Reason | None:
    """Why the decoder rejected it (returned or raised), or None."""
    try:
        result = dec.decode(datagram, wall_ms() if now is None else now)
    except Rejected as exc:
        return exc.reason
    return result.reason if isinstance(result, Rejected) else None


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
    now = wall_ms()
    fleet = Fleet()
    fleet.replace([], [])
    dec = decoder(fleet, unlisted_rate=2.0)
    strangers = [forged(agent().datagram()) for _ in range(10)]
    reasons = [reason(dec, d, now) for d in strangers]
    assert reasons == [Reason.BAD_SIGNATURE] * 2 + [Reason.UNLISTED] * 8
    assert len(derivations) == 2
    assert dec.keyring.cached() == 0  # forgeries never cache a key
    # The budget refills with time: one more a half second later.
    assert reason(dec, forged(agent().datagram()), now + 500) is Reason.BAD_SIGNATURE
    assert reason(dec, forged(agent().datagram()), now + 500) is Reason.UNLISTED


def test_new_amphora_gets_in_through_the_budget_and_joins_the_fleet(derivations: list[bytes]):
    now = wall_ms()
    fleet = Fleet()
    fleet.replace([], [])
    dec = decoder(fleet, unlisted_rate=1.0)
    newcomer = agent()
    hb, newest = dec.decode(newcomer.datagram(), now)
    assert hb.amphora_id == newcomer.amphora and newest
    assert fleet.known(newcomer.amphora)
    # Spend the budget on a stranger: the newcomer still gets in (key cached).
    assert reason(dec, forged(agent().datagram())) is Reason.UNLISTED
    assert reason(dec, newcomer.datagram()) is None
    assert derivations == [newcomer.amphora]


def test_before_the_first_fleet_load_nothing_is_unlisted():
    dec = decoder(Fleet(), unlisted_rate=0.0)
    assert all(reason(dec, forged(agent().datagram())) is Reason.BAD_SIGNATURE for _ in range(5))
    assert reason(dec, agent().datagram()) is None


def test_a_verified_native_heartbeat_marks_its_amphora_native():
    now = wall_ms()
    fleet = Fleet()
    dec = decoder(fleet)
    a = agent()
    assert reason(dec, forged(a.datagram())) is Reason.BAD_SIGNATURE
    assert not fleet.native(a.amphora)
    dec.decode(a.datagram(), now)
    assert fleet.native(a.amphora)


def test_octavia_heartbeat_after_native_is_a_downgrade():
    now = wall_ms()
    dec = decoder()
    a = agent()
    captured = octavia_datagram(a, 1)
    assert reason(dec, captured) is None  # before native: accepted
    dec.decode(a.datagram(), now + 1)
    assert reason(dec, captured, now + 10_000) is Reason.DOWNGRADE
    assert reason(dec, octavia_datagram(a, 500), now + 20_000) is Reason.DOWNGRADE


def test_octavia_heartbeat_of_an_amphora_the_database_knows_as_native_is_a_downgrade():
    a = agent()
    fleet = Fleet()
    fleet.replace([a.amphora], [a.amphora])
    assert reason(decoder(fleet), octavia_datagram(a, 0)) is Reason.DOWNGRADE


def test_octavia_agent_restart_is_accepted_at_once_and_reported():
    now = wall_ms()
    dec = decoder()
    restarts: list[tuple[bytes, int | None, int]] = []
    dec.on_restart = lambda amphora, previous, seq: restarts.append((amphora, previous, seq))
    a = agent()
    for seq in range(4):
        assert dec.decode(octavia_datagram(a, seq), now + seq * INTERVAL_MS)[1]
    _hb, newest = dec.decode(octavia_datagram(a, 0), now + 4 * INTERVAL_MS)
    assert newest
    assert restarts == [(a.amphora, 3, 0)]


def test_octavia_network_duplicate_is_replayed():
    now = wall_ms()
    dec = decoder()
    a = agent()
    datagram = octavia_datagram(a, 5)
    dec.decode(datagram, now)
    assert reason(dec, datagram, now + 10) is Reason.REPLAYED


def test_sighup_update_keeps_the_fleet_and_replay_state():
    from healthmgr.config import Settings

    fleet = Fleet()
    fleet.replace([b"x" * 16], [b"x" * 16])
    dec = decoder(fleet)
    a = agent()
    now = int(time.time() * 1000)
    dec.decode(a.datagram(seq=7), now)
    settings = Settings.model_validate(
        {
            "keys": {"master": [{"id": MASTER.id, "secret": MASTER.secret.decode()}]},
            "health_manager": {"unlisted_derive_rate": 5},
        }
    )
    dec.update(settings)
    assert dec.fleet is fleet and fleet.native(b"x" * 16)
    assert dec.unlisted.rate == 5
    assert reason(dec, a.datagram(seq=7), now + 1) is Reason.REPLAYED


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
        ("octavia agent restarted", 0, 7),
        ("octavia agent restarted", 0, None),
    ]
    assert sink.lines[0][1]["amphora_id"] == "61616161-6161-6161-6161-616161616161"
    now[0] += 10
    log.flush()
    assert sink.lines[-1] == (
        "octavia agent restarts not logged",
        {"suppressed": 2, "summary": True},
    )
    log.restart(c, 9, 1)
    assert sink.lines[-1][0] == "octavia agent restarted"


def test_bad_magic_is_returned_with_octavia_off_and_raised_never():
    now = wall_ms()
    dec = Decoder(
        Keyring([MASTER], MASTER.id), octavia_key=None, max_age_ms=60_000, max_future_ms=60_000
    )
    for datagram in (b"", b"x", b"\x78\x9c" + bytes(100), bytes(300)):
        result = dec.decode(datagram, now)
        assert isinstance(result, Rejected) and result.reason is Reason.BAD_MAGIC
        assert result.__traceback__ is None  # a shared value, never raised

"""The fleet simulator: datagrams decode, faults do what they say, seeded runs repeat."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from healthmgr.chaos.fleet import Faults, Fleet, Topology, read_master_key, send
from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.keys import Keyring, MasterKey
from healthmgr.wire.native import decode_native
from healthmgr.wire.payload import pack_payload
from healthmgr.wire.values import ListenerState, MemberState

MASTER = MasterKey(3, b"fleet-test-master-secret-0123456789")
KEYS = Keyring([MASTER], 3)
NOW_MS = 1_800_000_000_000


def decode_all(datagrams: list[bytes]) -> tuple[list, Counter]:
    accepted, rejected = [], Counter()
    for d in datagrams:
        try:
            accepted.append(decode_native(d, KEYS))
        except Rejected as exc:
            rejected[exc.reason] += 1
    return accepted, rejected


def test_seed_topology_decodes() -> None:
    fleet = Fleet.create(5, MASTER, seed=1)
    datagrams = fleet.datagrams(0, NOW_MS)
    assert len(datagrams) == 5
    heartbeats, rejected = decode_all(datagrams)
    assert not rejected
    topo = fleet.topology.amphorae
    for hb, amphora in zip(heartbeats, topo, strict=True):
        assert hb.amphora_id == amphora.id
        assert (hb.seq, hb.sent_at_ms, hb.interval_ms) == (1, NOW_MS, 10_000)
        (listener,) = hb.listeners
        assert listener.id == amphora.listeners[0].id
        assert listener.status is ListenerState.OPEN
        assert (listener.bytes_in, listener.bytes_out, listener.total_connections) == (
            1000,
            4000,
            10,
        )
        (pool,) = hb.pools
        assert pool.listener_id == listener.id
        assert [m.id for m in pool.members] == list(amphora.listeners[0].pools[0].members)
        assert all(m.status is MemberState.UP for m in pool.members)
    # Next round: the sequence and the absolute counters move on.
    (hb,) = decode_all(fleet.datagrams(1, NOW_MS + 10)[:1])[0]
    assert hb.seq == 2 and hb.listeners[0].bytes_in == 2000


def test_large_topology_decodes() -> None:
    fleet = Fleet.create(2, MASTER, large=True)
    heartbeats, rejected = decode_all(fleet.datagrams(0, NOW_MS))
    assert not rejected
    for hb in heartbeats:
        assert len(hb.listeners) == 10 and len(hb.pools) == 10
        assert all(len(p.members) == 10 for p in hb.pools)


def test_topology_json_round_trip_and_given_ids() -> None:
    topo = Topology.generate(3, seed=9)
    doc = json.loads(json.dumps(topo.to_json()))
    assert Topology.from_json(doc) == topo
    assert Topology.generate(3, seed=9) == topo != Topology.generate(3, seed=10)
    with pytest.raises(ValueError, match="ids file"):
        Topology.from_json({"amphorae": [{"id": "not-a-uuid"}]})


@pytest.mark.parametrize("large", [False, True])
def test_fast_payload_equals_full_pack(large: bool) -> None:
    fleet = Fleet.create(3, MASTER, large=large)
    for round_ in range(3):
        for index in range(3):
            expected = pack_payload(fleet.heartbeat(index, round_, NOW_MS))
            assert fleet.payload(index, round_, NOW_MS) == expected
    member = fleet.topology.amphorae[1].listeners[0].pools[0].members[0]
    fleet.set_member_state(1, member, MemberState.DOWN)
    hb = fleet.heartbeat(1, 3, NOW_MS)
    assert hb.pools[0].members[0].status is MemberState.DOWN
    assert fleet.payload(1, 3, NOW_MS) == pack_payload(hb)
    (decoded,) = decode_all(fleet.datagrams(3, NOW_MS)[1:2])[0]
    assert decoded == hb


def test_member_state_hook() -> None:
    down = Topology.generate(1).amphorae[0].listeners[0].pools[0].members[1]
    fleet = Fleet(
        Topology.generate(1),
        MASTER,
        member_state=lambda i, m: MemberState.DOWN if m == down else MemberState.UP,
    )
    (hb,) = decode_all(fleet.datagrams(0, NOW_MS))[0]
    assert [m.status for m in hb.pools[0].members] == [MemberState.UP, MemberState.DOWN]


def _run(faults: Faults, rounds: int = 50, amphorae: int = 40, seed: int = 4):
    fleet = Fleet.create(amphorae, MASTER, faults=faults, seed=seed)
    out = []
    for r in range(rounds):
        out.extend(fleet.datagrams(r, NOW_MS + r))
    fleet.flushed = fleet.flush()  # type: ignore[attr-defined]
    out.extend(fleet.flushed)  # type: ignore[attr-defined]
    return fleet, out


def test_no_faults_every_heartbeat_once() -> None:
    fleet, out = _run(Faults())
    assert len(out) == fleet.counts.honest == 2000 and len(set(out)) == 2000


def test_drop_and_duplicate_counts() -> None:
    fleet, out = _run(Faults(drop=0.2, duplicate=0.1))
    c = fleet.counts
    assert 300 < c.dropped < 500  # ~20% of 2000
    assert 120 < c.duplicated < 240  # ~10% of the 1600 sent
    assert len(out) == c.honest - c.dropped + c.duplicated
    heartbeats, rejected = decode_all(out)
    assert not rejected
    seen = Counter((hb.amphora_id, hb.seq) for hb in heartbeats)
    assert len(seen) == c.honest - c.dropped
    assert sum(n - 1 for n in seen.values()) == c.duplicated


def test_reorder_sends_after_successor() -> None:
    fleet, out = _run(Faults(reorder=0.1))
    assert 100 < fleet.counts.reordered < 300
    heartbeats, _ = decode_all(out)
    assert len(heartbeats) == fleet.counts.honest  # nothing lost, nothing extra
    last: dict[bytes, int] = {}
    inversions = 0
    for hb in heartbeats:
        if hb.seq < last.get(hb.amphora_id, 0):
            inversions += 1
        last[hb.amphora_id] = max(hb.seq, last.get(hb.amphora_id, 0))
    # Every held datagram arrives after its successor, except those held in the
    # last round: they have no successor and are flushed at the end.
    assert inversions == fleet.counts.reordered - len(fleet.flushed)  # type: ignore[attr-defined]


def test_forged_are_rejected_by_signature() -> None:
    fleet, out = _run(Faults(forged=0.05))
    assert 50 < fleet.counts.forged < 160
    heartbeats, rejected = decode_all(out)
    assert rejected == Counter({Reason.BAD_SIGNATURE: fleet.counts.forged})
    assert len(heartbeats) == fleet.counts.honest


def test_replays_are_earlier_datagrams() -> None:
    fleet, out = _run(Faults(replay=0.05))
    assert 50 < fleet.counts.replayed < 160
    assert len(out) == fleet.counts.honest + fleet.counts.replayed
    heartbeats, rejected = decode_all(out)
    assert not rejected
    last: dict[bytes, int] = {}
    stale = 0
    for hb in heartbeats:
        if hb.seq <= last.get(hb.amphora_id, 0):
            stale += 1
        last[hb.amphora_id] = max(hb.seq, last.get(hb.amphora_id, 0))
    assert stale == fleet.counts.replayed


def test_dead_amphorae_go_silent() -> None:
    fleet, out = _run(Faults(dead=0.25, dead_after=10))
    assert fleet.counts.dead_amphorae == 10 and len(fleet.dead) == 10
    heartbeats, _ = decode_all(out)
    dead_ids = {fleet.topology.amphorae[i].id for i in fleet.dead}
    last_seq = {hb.amphora_id: hb.seq for hb in heartbeats}
    assert {a for a, s in last_seq.items() if s == 10} == dead_ids  # rounds 0-9 = seq 1-10
    assert all(last_seq[a.id] == 50 for a in fleet.topology.amphorae if a.id not in dead_ids)
    assert fleet.counts.silenced == 10 * 40


def test_seeded_runs_repeat() -> None:
    faults = Faults(drop=0.1, duplicate=0.1, reorder=0.1, forged=0.1, replay=0.1, dead=0.1)
    a, out_a = _run(faults, rounds=10)
    b, out_b = _run(faults, rounds=10)
    assert out_a == out_b and a.counts == b.counts
    _, out_c = _run(faults, rounds=10, seed=5)
    assert out_c != out_a


def test_bad_fault_values() -> None:
    with pytest.raises(ValueError, match="drop"):
        Faults(drop=1.5)


def test_send_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        fleet = Fleet.create(10, MASTER, faults=Faults(drop=0.5), seed=2)
        summary = send(fleet, rx.getsockname(), rate=2000, duration=0.1)
        rx.settimeout(0.5)
        got = []
        while len(got) < summary["sent"]:
            got.append(rx.recv(65536))
    assert summary["rounds"] == 20 and summary["sent"] == summary["honest"] - summary["dropped"]
    assert summary["last_seq"] == 20
    heartbeats, rejected = decode_all(got)
    assert not rejected and len(heartbeats) == summary["sent"]


def test_cli(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER.secret.decode() + "\n")
    assert read_master_key(key_file, 3) == MASTER
    ids = tmp_path / "ids.json"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        cmd = [sys.executable, "-m", "healthmgr.chaos.fleet", "--amphorae", "4", "--rate", "400"]
        cmd += ["--duration", "0.05", "--manager", f"127.0.0.1:{port}"]
        cmd += ["--master-key-file", str(key_file), "--key-id", "3", "--write-ids", str(ids)]
        cmd += ["--duplicate", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        rx.settimeout(0.5)
        got = [rx.recv(65536) for _ in range(summary["sent"])]
    assert summary["amphorae"] == 4 and summary["duplicated"] == summary["honest"]
    topo = Topology.from_json(json.loads(ids.read_text()))
    heartbeats, _ = decode_all(got)
    assert {hb.amphora_id for hb in heartbeats} == {a.id for a in topo.amphorae}

    bad = subprocess.run(
        [*cmd[:-2], "--ids-file", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2 and "missing.json" in bad.stderr

"""Fleet simulator: signed heartbeats for N simulated amphorae, with fault injection.

A tool for tests and benchmarks, not the daemon: one process, a plain blocking
UDP socket, ``sendto`` in a tight loop paced to a target rate, heartbeats
pre-signed in batches so signing does not limit the rate.

Topology per amphora: ``seed`` (1 listener, 1 pool, 2 members) or ``large``
(10 listeners, each with one pool of 10 members). Ids are random but
deterministic for a seed, or given (``Topology.from_json``) so a test can
create the same load balancers in a database first.

Heartbeat contents in round ``r`` (sequence ``seq = start_seq + r``): every
listener OPEN with absolute counters ``bytes_in = 1000*seq``,
``bytes_out = 4000*seq``, ``total_connections = 10*seq``,
``request_errors = seq``, ``current_connections = seq % 7``; pools UP; members
UP (or ``member_state``). So the totals a manager should have counted are
known from the last accepted sequence.

Faults (each an independent probability per honest datagram, seeded):

* ``drop``: the datagram is not sent;
* ``duplicate``: it is sent twice;
* ``reorder``: it is held back and sent after the same amphora's next one;
* ``forged``: an extra datagram for that amphora signed with another
  amphora's key (a compromised amphora speaking for another);
* ``replay``: an extra copy of one of that amphora's earlier datagrams;
* ``dead``: a fraction of the amphorae stop sending from round ``dead_after``.

CLI: ``python -m healthmgr.chaos.fleet --amphorae N --rate R --duration S
--manager 127.0.0.1:5555 --master-key-file F --key-id K [--ids-file ids.json]
[--write-ids out.json] [--large] [--drop 0.1] ...`` prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from healthmgr.secret_files import read_secret_file
from healthmgr.wire import envelope
from healthmgr.wire.addresses import split_host_port
from healthmgr.wire.ids import Id, id_bytes, id_str
from healthmgr.wire.keys import MasterKey, derive_amphora_key
from healthmgr.wire.payload import pack_payload
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
)

SEED_SHAPE = (1, 2)  # listeners, members per pool (one pool per listener)
LARGE_SHAPE = (10, 10)
REPLAY_HISTORY = 8  # how many earlier datagrams per amphora a replay picks from
_EMPTY_ARRAY = b"\x90"  # msgpack fixarray of length 0


def counters(seq: int) -> tuple[int, int, int, int]:
    """The absolute counters every listener reports at ``seq``: bytes_in, bytes_out,
    total_connections, request_errors (what the database must total)."""
    return 1000 * seq, 4000 * seq, 10 * seq, seq


# ---------------------------------------------------------------- topology


@dataclass(frozen=True, slots=True)
class PoolTopo:
    id: Id
    members: tuple[Id, ...]


@dataclass(frozen=True, slots=True)
class ListenerTopo:
    id: Id
    pools: tuple[PoolTopo, ...]


@dataclass(frozen=True, slots=True)
class AmphoraTopo:
    id: Id
    load_balancer_id: Id
    listeners: tuple[ListenerTopo, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    amphorae: tuple[AmphoraTopo, ...]

    @classmethod
    def generate(cls, count: int, *, large: bool = False, seed: int = 0) -> Topology:
        """``count`` amphorae of the seed (or large) shape, ids from ``seed``."""
        rng = random.Random(f"topology-{seed}")

        def new_id() -> Id:
            return uuid.UUID(int=rng.getrandbits(128), version=4).bytes

        n_listeners, n_members = LARGE_SHAPE if large else SEED_SHAPE
        amphorae = []
        for _ in range(count):
            amphora_id, lb_id = new_id(), new_id()
            listeners = tuple(
                ListenerTopo(
                    new_id(), (PoolTopo(new_id(), tuple(new_id() for _ in range(n_members))),)
                )
                for _ in range(n_listeners)
            )
            amphorae.append(AmphoraTopo(amphora_id, lb_id, listeners))
        return cls(tuple(amphorae))

    def to_json(self) -> dict[str, Any]:
        return {
            "amphorae": [
                {
                    "id": id_str(a.id),
                    "load_balancer_id": id_str(a.load_balancer_id),
                    "listeners": [
                        {
                            "id": id_str(listener.id),
                            "pools": [
                                {"id": id_str(p.id), "members": [id_str(m) for m in p.members]}
                                for p in listener.pools
                            ],
                        }
                        for listener in a.listeners
                    ],
                }
                for a in self.amphorae
            ]
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Topology:
        """Inverse of :meth:`to_json`; ValueError naming the bad entry."""
        try:
            return cls(
                tuple(
                    AmphoraTopo(
                        id_bytes(a["id"]),
                        id_bytes(a.get("load_balancer_id") or str(uuid.uuid4())),
                        tuple(
                            ListenerTopo(
                                id_bytes(listener["id"]),
                                tuple(
                                    PoolTopo(id_bytes(p["id"]), tuple(map(id_bytes, p["members"])))
                                    for p in listener.get("pools", ())
                                ),
                            )
                            for listener in a.get("listeners", ())
                        ),
                    )
                    for a in doc["amphorae"]
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"ids file: bad topology document ({type(exc).__name__}: {exc})"
            ) from None


# ---------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    forged: float = 0.0
    replay: float = 0.0
    dead: float = 0.0  # fraction of amphorae that stop sending
    dead_after: int = 0  # ... from this round on

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "forged", "replay", "dead"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} must be a probability in [0, 1], got {value}")
        if self.dead_after < 0:
            raise ValueError(f"dead_after must be >= 0, got {self.dead_after}")


@dataclass
class Counts:
    """What the fleet did. ``honest`` counts distinct genuine heartbeats built."""

    rounds: int = 0
    honest: int = 0
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    forged: int = 0
    replayed: int = 0
    dead_amphorae: int = 0
    silenced: int = 0  # heartbeats dead amphorae did not send
    send_errors: int = 0


# ---------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """Heartbeats of a simulated fleet. ``datagrams(round)`` is deterministic for a seed."""

    topology: Topology
    master: MasterKey
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    interval_ms: int = 10_000
    start_seq: int = 1
    counters_epoch: int = 1
    # (amphora index, member id) -> state, asked once per member; see set_member_state.
    member_state: Callable[[int, Id], MemberState] | None = None
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        self.key_id = self.master.id
        self._keys = [derive_amphora_key(self.master, a.id) for a in self.topology.amphorae]
        self._rng = random.Random(f"faults-{self.seed}")
        n_dead = round(self.faults.dead * len(self.topology.amphorae))
        picker = random.Random(f"dead-{self.seed}")
        self.dead: frozenset[int] = frozenset(
            picker.sample(range(len(self.topology.amphorae)), n_dead)
        )
        self._held: dict[int, bytes] = {}
        # Pools and members do not change between rounds: built once per amphora.
        self._pools: dict[int, tuple[PoolReport, ...]] = {}
        self._member_overrides: dict[int, dict[Id, MemberState]] = {}
        self._pool_bytes: dict[int, bytes] = {}
        self._history: dict[int, deque[bytes]] = {}
        self.counts = Counts(dead_amphorae=len(self.dead))
        # Changed at run time by a scenario: amphorae that send nothing, and
        # amphorae whose bytes_in is this value (extreme counters).
        self.silenced: set[int] = set()
        self.poison: dict[int, int] = {}

    @classmethod
    def create(
        cls,
        amphorae: int,
        master: MasterKey,
        *,
        large: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> Fleet:
        return cls(Topology.generate(amphorae, large=large, seed=seed), master, seed=seed, **kwargs)

    def __len__(self) -> int:
        return len(self.topology.amphorae)

    def key(self, index: int) -> bytes:
        return self._keys[index]

    def heartbeat(
        self, index: int, round_: int, sent_at_ms: int, *, with_pools: bool = True
    ) -> Heartbeat:
        """The honest heartbeat of amphora ``index`` in ``round_``."""
        amphora = self.topology.amphorae[index]
        seq = self.start_seq + round_
        bytes_in, bytes_out, total, errors = counters(seq)
        bytes_in = self.poison.get(index, bytes_in)
        listeners = tuple(
            ListenerReport(
                listener.id, ListenerState.OPEN, seq % 7, bytes_in, bytes_out, total, errors
            )
            for listener in amphora.listeners
        )
        pools: tuple[PoolReport, ...] = ()
        if with_pools:
            pools = self._pools.get(index) or self._pools.setdefault(
                index, self._build_pools(index)
            )
        return Heartbeat(
            amphora_id=amphora.id,
            seq=seq,
            sent_at_ms=sent_at_ms,
            interval_ms=self.interval_ms,
            counters_epoch=self.counters_epoch,
            listeners=listeners,
            pools=pools,
        )

    def payload(self, index: int, round_: int, sent_at_ms: int) -> bytes:
        """The payload bytes of :meth:`heartbeat`, fast.

        Pools and members do not change between rounds, and the payload is a
        msgpack array whose last element is the pools: their bytes are packed
        once per amphora and appended to the packed rest (checked against a
        full pack the first time; tests decode the result).
        """
        tail = self._pool_bytes.get(index)
        if tail is None:
            full = pack_payload(self.heartbeat(index, round_, sent_at_ms))
            head = pack_payload(self.heartbeat(index, round_, sent_at_ms, with_pools=False))
            if head.endswith(_EMPTY_ARRAY) and full.startswith(head[:-1]):
                self._pool_bytes[index] = full[len(head) - 1 :]
            return full
        head = pack_payload(self.heartbeat(index, round_, sent_at_ms, with_pools=False))
        return head[:-1] + tail

    def _build_pools(self, index: int) -> tuple[PoolReport, ...]:
        amphora = self.topology.amphorae[index]
        overrides = self._member_overrides.get(index, {})
        state = self.member_state

        def status(member: Id) -> MemberState:
            if member in overrides:
                return overrides[member]
            return MemberState.UP if state is None else state(index, member)

        return tuple(
            PoolReport(
                pool.id,
                listener.id,
                PoolState.UP,
                tuple(MemberReport(m, status(m)) for m in pool.members),
            )
            for listener in amphora.listeners
            for pool in listener.pools
        )

    def set_member_state(self, index: int, member: Id, state: MemberState) -> None:
        """From now on amphora ``index`` reports ``member`` as ``state`` (e.g. DOWN)."""
        self._member_overrides.setdefault(index, {})[member] = state
        self._pools.pop(index, None)
        self._pool_bytes.pop(index, None)

    def sign(self, hb: Heartbeat, key: bytes) -> bytes:
        # pack+seal directly: encode_native also re-decodes to check the limits,
        # which triples the cost; tests/chaos/test_fleet_simulator.py decodes these instead.
        return envelope.seal(self.key_id, hb.amphora_id, pack_payload(hb), key)

    def datagrams(
        self,
        round_: int,
        sent_at_ms: int | None = None,
        offset_ms: Callable[[int], int] | None = None,
    ) -> list[bytes]:
        """Round ``round_``: one heartbeat per live amphora, with the faults applied.

        Stateful across rounds (held-back and earlier datagrams); call with
        increasing rounds. ``sent_at_ms`` defaults to now; ``offset_ms(index)``
        is added for an amphora sent later in the round (a paced sender).
        """
        sent_at = self.clock_ms() if sent_at_ms is None else sent_at_ms
        out: list[bytes] = []
        f, rng, c = self.faults, self._rng, self.counts
        c.rounds += 1
        n = len(self._keys)
        for index in range(n):
            if index in self.silenced or (index in self.dead and round_ >= f.dead_after):
                c.silenced += 1
                continue
            payload = self.payload(index, round_, sent_at + (offset_ms(index) if offset_ms else 0))
            amphora_id = self.topology.amphorae[index].id
            good = envelope.seal(self.key_id, amphora_id, payload, self._keys[index])
            c.honest += 1
            history = self._history.setdefault(index, deque(maxlen=REPLAY_HISTORY))
            if f.forged and rng.random() < f.forged:
                other = self._keys[(index + 1) % n] if n > 1 else bytes(32)
                forged = envelope.seal(self.key_id, amphora_id, payload, other)
                if forged == good:  # one amphora: flip the tag instead
                    forged = good[:-1] + bytes([good[-1] ^ 1])
                out.append(forged)
                c.forged += 1
            if f.replay and history and rng.random() < f.replay:
                out.append(rng.choice(history))
                c.replayed += 1
            history.append(good)
            held = self._held.pop(index, None)
            if f.drop and rng.random() < f.drop:
                c.dropped += 1
            elif f.reorder and held is None and rng.random() < f.reorder:
                self._held[index] = good
                c.reordered += 1
            else:
                out.append(good)
                if f.duplicate and rng.random() < f.duplicate:
                    out.append(good)
                    c.duplicated += 1
            if held is not None:
                out.append(held)  # after its successor: reordered
        return out

    def flush(self) -> list[bytes]:
        """Datagrams still held back for reordering (send them last)."""
        out = list(self._held.values())
        self._held.clear()
        return out

    def presign(self, rounds: int, start_ms: int, round_ms: float) -> list[list[bytes]]:
        """``rounds`` rounds, round ``r`` stamped ``start_ms + r * round_ms``."""
        batches = [self.datagrams(r, int(start_ms + r * round_ms)) for r in range(rounds)]
        if batches:
            batches[-1].extend(self.flush())
        return batches


# ---------------------------------------------------------------- sending


def blast(
    sock: socket.socket | Sequence[socket.socket],
    address: tuple[str, int],
    batches: Sequence[Sequence[bytes]],
    rate: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, int, float]:
    """Send every datagram at ``rate`` per second; returns (sent, errors, elapsed seconds).

    Paced on the clock every 32 datagrams (sleeping when ahead, bursting to
    catch up when behind), so the average rate holds without a syscall per packet.
    With several sockets, an amphora always sends from the same one (chosen by
    the first byte of its id), as real amphorae each have their own address:
    the kernel's SO_REUSEPORT hash then spreads amphorae over manager processes.
    """
    sent = errors = 0
    start = clock()
    interval = 1.0 / rate if rate > 0 else 0.0
    socks = [sock] if isinstance(sock, socket.socket) else list(sock)
    sendtos = [s.sendto for s in socks]
    n = len(sendtos)
    for batch in batches:
        for datagram in batch:
            try:
                sendtos[datagram[6] % n if n > 1 else 0](datagram, address)
                sent += 1
            except OSError:
                errors += 1
            if interval and not (sent + errors) & 31:
                ahead = start + (sent + errors) * interval - clock()
                if ahead > 0:
                    time.sleep(ahead)
    return sent, errors, clock() - start


def _signing_time(fleet: Fleet, sample: int = 200) -> float:
    """Seconds to build and sign one heartbeat, measured on a sample."""
    n = min(sample, len(fleet))
    if n == 0:
        return 0.0
    began = time.perf_counter()
    for index in range(n):
        fleet.sign(fleet.heartbeat(index, 0, 0), fleet.key(index))
    return (time.perf_counter() - began) / n


def send(
    fleet: Fleet,
    manager: tuple[str, int],
    *,
    rate: float,
    duration: float,
    sock: socket.socket | None = None,
    sources: int = 1,
) -> dict[str, Any]:
    """Run the fleet against ``manager`` for ``duration`` seconds at ``rate`` datagrams/s.

    Pre-signs every round first (stamped with the time it will be sent: the
    start is put after the measured signing time), then blasts. Returns the
    JSON-able summary.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    live = max(1, len(fleet) - len(fleet.dead))
    rounds = max(1, math.ceil(rate * duration / live))
    round_ms = 1000.0 * live / rate
    # Time one round to place the start after signing, so sent_at stays honest.
    per_round = _signing_time(fleet) * len(fleet)
    start_ms = fleet.clock_ms() + int(1000 * (per_round * rounds * 1.2 + 0.1))
    batches = fleet.presign(rounds, start_ms, round_ms)
    delay = (start_ms - fleet.clock_ms()) / 1000.0
    if delay > 0:
        time.sleep(delay)
    family = socket.AF_INET6 if ":" in manager[0] else socket.AF_INET
    own = (
        []
        if sock is not None
        else [socket.socket(family, socket.SOCK_DGRAM) for _ in range(max(1, sources))]
    )
    socks = [sock] if sock is not None else own
    try:
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        cpu_began = time.process_time()
        sent, errors, elapsed = blast(socks, manager, batches, rate)
        blast_cpu = time.process_time() - cpu_began
    finally:
        for s in own:
            s.close()
    fleet.counts.sent += sent
    fleet.counts.send_errors += errors
    summary = asdict(fleet.counts)
    summary.update(
        amphorae=len(fleet),
        rate_target=rate,
        elapsed_s=round(elapsed, 3),
        # The sending alone (signing was done before): what competes with the manager.
        blast_cpu_s=round(blast_cpu, 4),
        rate_achieved=round(sent / elapsed, 1) if elapsed > 0 else None,
        first_seq=fleet.start_seq,
        last_seq=fleet.start_seq + rounds - 1,
    )
    return summary


# ---------------------------------------------------------------- CLI


def read_master_key(path: Path, key_id: int) -> MasterKey:
    """A master key file as the manager reads ``[[keys.master]] secret_file``
    (:mod:`healthmgr.secret_files`); ValueError if it cannot be used."""
    return MasterKey(key_id, read_secret_file(path).encode("utf-8"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m healthmgr.chaos.fleet", description=__doc__.splitlines()[0]
    )
    p.add_argument("--amphorae", type=int, default=100)
    p.add_argument("--rate", type=float, required=True, help="datagrams per second")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--manager", default="127.0.0.1:5555", help="host:port")
    p.add_argument("--master-key-file", type=Path, required=True)
    p.add_argument("--key-id", type=int, required=True)
    p.add_argument("--ids-file", type=Path, help="topology JSON to use (else generated)")
    p.add_argument("--write-ids", type=Path, help="write the topology JSON used here")
    p.add_argument("--large", action="store_true", help="10 listeners x 10 members each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interval-ms", type=int, default=10_000)
    p.add_argument("--start-seq", type=int, default=1)
    p.add_argument(
        "--sources",
        type=int,
        default=1,
        help="source sockets (amphorae keep theirs; spreads over SO_REUSEPORT)",
    )
    for name in ("drop", "duplicate", "reorder", "forged", "replay", "dead"):
        p.add_argument(f"--{name}", type=float, default=0.0, help="probability (dead: fraction)")
    p.add_argument("--dead-after", type=int, default=0, help="round from which dead go silent")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        master = read_master_key(args.master_key_file, args.key_id)
        if args.ids_file:
            topology = Topology.from_json(json.loads(args.ids_file.read_text()))
        else:
            topology = Topology.generate(args.amphorae, large=args.large, seed=args.seed)
        faults = Faults(
            drop=args.drop,
            duplicate=args.duplicate,
            reorder=args.reorder,
            forged=args.forged,
            replay=args.replay,
            dead=args.dead,
            dead_after=args.dead_after,
        )
        fleet = Fleet(
            topology,
            master,
            faults=faults,
            seed=args.seed,
            interval_ms=args.interval_ms,
            start_seq=args.start_seq,
        )
        if args.write_ids:
            args.write_ids.write_text(json.dumps(topology.to_json(), indent=1))
        summary = send(
            fleet,
            split_host_port(args.manager),
            rate=args.rate,
            duration=args.duration,
            sources=args.sources,
        )
    except (OSError, ValueError) as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

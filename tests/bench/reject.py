"""What one rejected datagram costs the manager's receive path, by kind, as JSON.

In process, the daemon's own objects (``Daemon`` from the config, so the
decoder, fleet, ingest and rate-limited rejection log are the real ones) and
a real UDP socket: N datagrams of one kind are queued in the socket, then
``Receiver.drain`` reads and handles them all; the time per datagram is
``recvfrom`` plus everything the daemon does with it. Kinds as in
``flood.py``: ``garbage``, ``known`` (a fleet amphora's header, bad tag),
``random`` (native header, random amphora id), and ``replayed`` (a valid
heartbeat already accepted: verified, then rejected by the replay window; the
honest path up to the view).

    .venv/bin/python tests/bench/reject.py [--count 20000] [--repeat 7]

Best of ``--repeat`` (the machine is shared). Under
``valgrind --tool=callgrind`` add ``--kinds K --count N`` and subtract a run
with ``--count 0`` for instructions per datagram, which load does not move.
Runs against whatever ``healthmgr`` is first on ``sys.path`` (``PYTHONPATH``
an older checkout to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import structlog  # noqa: E402

from healthmgr.config import Settings  # noqa: E402
from healthmgr.manager.receiver import Receiver  # noqa: E402
from healthmgr.manager.service import Daemon  # noqa: E402
from tests.manager.harness import MASTER, Agent  # noqa: E402

FLEET = 200


def daemon(workdir: Path) -> Daemon:
    settings = Settings.model_validate(
        {
            "database": {"connection": f"sqlite:///{workdir / 'x.db'}"},
            "keys": {"master": [{"id": MASTER.id, "secret": MASTER.secret.decode()}]},
            "health_manager": {
                "heartbeat_interval": 1.0,
                "heartbeat_timeout": 10.0,
                "max_clock_skew": 3600.0,
            },
        }
    )
    return Daemon(settings)


def datagrams(kind: str, count: int, agents: list[Agent], rng: random.Random) -> list[bytes]:
    good = agents[0].datagram()
    if kind == "garbage":
        return [bytes([0x10]) + rng.randbytes(228) for _ in range(min(count, 256))]
    if kind == "known":
        return [a.datagram()[:-32] + rng.randbytes(32) for a in agents]
    if kind == "random":
        return [
            good[:6] + rng.randbytes(16) + good[22:-32] + rng.randbytes(32) for _ in range(count)
        ]
    if kind == "replayed":
        return [a.datagram() for a in agents]
    raise ValueError(kind)


def measure(
    d: Daemon, pool: list[bytes], count: int, rx: socket.socket, tx: socket.socket
) -> float:
    """Seconds per datagram to drain ``count`` datagrams from the socket."""
    address = rx.getsockname()
    for i in range(count):
        tx.sendto(pool[i % len(pool)], address)
    receiver = Receiver(rx, d.ingest.datagram, lambda n, started: None)
    began = time.perf_counter()
    while not receiver.drain():
        pass
    elapsed = time.perf_counter() - began
    if receiver.received != count:
        raise RuntimeError(f"read {receiver.received} of {count}: raise the socket buffer")
    d.ingest.publish()
    return elapsed / max(1, count)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--kinds", default="garbage,known,random,replayed")
    args = p.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    rng = random.Random(3)
    agents = [
        Agent(rng.randbytes(16), rng.randbytes(16), rng.randbytes(16), (rng.randbytes(16),))
        for _ in range(FLEET)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        d = daemon(Path(tmp))
        fleet = getattr(d, "fleet", None)
        if fleet is not None:
            fleet.replace([a.amphora for a in agents], [])
        # Every key derived and every replay window started: the steady state.
        now_ms = int(time.time() * 1000)
        for a in agents:
            d.decoder.decode(a.datagram(), now_ms)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE: hold every datagram
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out = {}
        for kind in args.kinds.split(","):
            pool = datagrams(kind, args.count, agents, rng)
            if kind == "replayed":
                for datagram in pool:
                    d.decoder.decode(datagram, int(time.time() * 1000))
            runs = [measure(d, pool, args.count, rx, tx) for _ in range(args.repeat)]
            out[kind] = round(min(runs) * 1e6, 2)
        d.engine.dispose()
    print(
        json.dumps(
            {
                "us_per_datagram": out,
                "count": args.count,
                "repeat": args.repeat,
                "healthmgr": os.path.dirname(sys.modules["healthmgr"].__file__ or ""),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The agent's own cost against a real HAProxy, as JSON: CPU per poll and per heartbeat, and RSS.

    .venv/bin/python tests/bench/agent.py [--listeners 1,10,50] [--members 10]
        [--cycles 300] [--repeat 5] [--window 30]

For each size: a real HAProxy with that many listeners (HTTP frontends), each
with one pool of ``--members`` servers (TCP checks every 10 s against the
first listener, so they are UP), named as Octavia names them. Then:

* in process, ``--repeat`` loops of ``--cycles`` iterations of what the agent
  does at every poll (``show info;show stat`` over the socket, parse, reports,
  summary, schedule: ``poll_ms``) and of a full poll-and-send cycle (the same,
  plus the sequence number, signing and the UDP send: ``poll_and_send_ms``);
  CPU time of this process (``time.process_time``) per iteration, best loop.
  HAProxy's CPU per answer (``haproxy_ms_per_poll``, from /proc, its check
  traffic subtracted) is reported alongside;
* the real ``amphora-agent`` at its defaults (poll every 1 s, heartbeat every
  10 s) for ``--window`` seconds after a 3 s warm-up: its CPU share of one core
  (``cpu_percent``, from /proc/<pid>/stat; 10 ms clock ticks) and its memory
  (``rss_mib``, VmRSS at the end; ``hwm_mib``, the peak).

``steady_cpu_percent`` = (poll_ms + poll_and_send_ms / 10) / 1000 s x 100: the
in-process estimate for the default intervals, to hold against the real
process's ``cpu_percent``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from agent import haproxy  # noqa: E402
from agent.config import AgentConfig, Destination  # noqa: E402
from agent.main import Agent  # noqa: E402
from agent.sender import SequenceFile, UdpSender  # noqa: E402
from healthmgr.wire.keys import MasterKey, derive_amphora_key  # noqa: E402

MASTER = MasterKey(1, b"agent benchmark master key, long enough")
TICK = os.sysconf("SC_CLK_TCK")
GLOBAL = """\
global
    stats socket {sock} mode 600 level user
    maxconn 4000
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
"""
LISTENER = """\
frontend {listener}
    bind 127.0.0.1:{port}
    default_backend {pool}:{listener}
backend {pool}:{listener}
    balance roundrobin
{servers}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_config(sock: Path, listeners: int, members: int) -> str:
    ports = [free_port() for _ in range(listeners)]
    parts = [GLOBAL.format(sock=sock)]
    for port in ports:
        servers = "\n".join(
            f"    server {uuid.uuid4()} 127.0.0.1:{ports[0]} check inter 10s"
            for _ in range(members)
        )
        parts.append(
            LISTENER.format(listener=uuid.uuid4(), pool=uuid.uuid4(), port=port, servers=servers)
        )
    return "".join(parts)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            key = "rss_mib" if name == "VmRSS" else "hwm_mib"
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


async def in_process(sock: Path, rx: socket.socket, cycles: int, repeat: int, haproxy_pid: int,
                     state: Path) -> dict[str, float]:  # fmt: skip
    config = AgentConfig(
        amphora_id=uuid.uuid4().bytes,
        key_id=MASTER.id,
        key=bytes(32),
        destinations=(Destination("127.0.0.1", rx.getsockname()[1]),),
        haproxy_socket=str(sock),
        interval=10.0,
        state_dir=state,
    )
    agent = Agent(config, SequenceFile(state, now_ms=int(time.time() * 1000)),
                  UdpSender(config.destinations))  # fmt: skip

    async def poll_once() -> None:
        reading = agent.read(await agent.poll())
        agent.cadence.decide(trio.current_time(), reading.summary)

    async def poll_and_send() -> None:
        reading = agent.read(await agent.poll())
        agent.cadence.decide(trio.current_time(), reading.summary)
        await agent.send(reading)
        while True:  # keep the receive buffer empty
            try:
                rx.recv(65536)
            except BlockingIOError:
                break

    async def best(step: Any) -> tuple[float, float]:
        """Best CPU ms per iteration over the loops, and HAProxy's ms per iteration then."""
        results = []
        for _ in range(repeat):
            h0, c0 = cpu_seconds(haproxy_pid), time.process_time()
            for _ in range(cycles):
                await step()
            results.append(((time.process_time() - c0) / cycles * 1000,
                            (cpu_seconds(haproxy_pid) - h0) / cycles * 1000))  # fmt: skip
        return min(results)

    await poll_and_send()  # warm up (first reservation write, caches)
    answer = await haproxy.run_command(str(sock), haproxy.QUERY)
    poll_ms, haproxy_ms = await best(poll_once)
    send_ms, _ = await best(poll_and_send)
    agent.sender.close()
    return {
        "answer_bytes": len(answer),
        "poll_ms": round(poll_ms, 3),
        "poll_and_send_ms": round(send_ms, 3),
        "haproxy_ms_per_poll": round(haproxy_ms, 3),
        "steady_cpu_percent": round((poll_ms + send_ms / 10) / 1000 * 100, 3),
    }


def real_agent(tmp: Path, sock: Path, rx: socket.socket, window: float) -> dict[str, float]:
    amphora = uuid.uuid4()
    key_file = tmp / "heartbeat.key"
    key_file.write_text(derive_amphora_key(MASTER, amphora.bytes).hex())
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "agent.main", "--amphora-id", str(amphora),
            "--key-id", str(MASTER.id), "--key-file", str(key_file),
            "--controller", f"127.0.0.1:{rx.getsockname()[1]}",
            "--haproxy-socket", str(sock), "--state-dir", str(tmp / "agent-state"),
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(3)  # imports and the first heartbeat
        rx.setblocking(False)
        while True:  # the first heartbeat came before the window
            try:
                rx.recv(65536)
            except BlockingIOError:
                break
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        received = 0
        rx.settimeout(0.2)
        while time.monotonic() - t0 < window:
            try:
                rx.recv(65536)
                received += 1
            except TimeoutError:
                pass
        cpu, wall = cpu_seconds(proc.pid) - c0, time.monotonic() - t0
        memory = memory_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "cpu_percent": round(cpu / wall * 100, 3),
        "window_s": round(wall, 1),
        "heartbeats_in_window": received,
        **memory,
    }


def measure(listeners: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sock, cfg = tmp / "haproxy.sock", tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(sock, listeners, args.members))
    server = subprocess.Popen([args.haproxy, "-db", "-f", str(cfg)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"haproxy did not start with {cfg}")
            time.sleep(0.05)
        time.sleep(0.5)  # first checks
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            state = tmp / "state"
            state.mkdir(exist_ok=True)
            figures = trio.run(in_process, sock, rx, args.cycles, args.repeat, server.pid, state)
            process = real_agent(tmp, sock, rx, args.window) if args.window > 0 else None
    finally:
        server.terminate()
        server.wait(10)
    return {
        "listeners": listeners,
        "members_per_listener": args.members,
        **figures,
        "process": process,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listeners", default="1,10,50")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--window", type=float, default=30.0, help="seconds of the real agent (0: skip)")
    p.add_argument("--haproxy", default="/usr/sbin/haproxy")
    args = p.parse_args(argv)
    results = []
    for count in (int(n) for n in args.listeners.split(",")):
        with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
            results.append(measure(count, args, Path(tmp)))
    print(json.dumps({
        "benchmark": "agent",
        "python": platform.python_version(),
        "haproxy": subprocess.run([args.haproxy, "-v"], capture_output=True, text=True,
                                  check=False).stdout.split("\n")[0],
        "cpu": platform.processor() or platform.machine(),
        "results": results,
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

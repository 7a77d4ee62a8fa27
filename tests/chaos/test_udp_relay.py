"""The UDP chaos relay: each fault does what it says, over real sockets."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from healthmgr.chaos.udp_relay import UdpCounts, UdpFaults, UdpRelay, UdpRelayError, plan


def test_plan_applies_each_fault_at_its_rate() -> None:
    rng, counts = random.Random(1), UdpCounts()
    faults = UdpFaults(
        loss=0.2,
        duplicate=0.1,
        reorder=0.1,
        corrupt=0.1,
        delay=0.05,
        jitter=0.01,
        reorder_delay=2.0,
    )
    data = bytes(range(64))
    out = [plan(data, faults, rng, counts) for _ in range(5000)]
    assert counts.received == 5000
    assert 900 < counts.lost < 1100 and sum(1 for o in out if not o) == counts.lost
    assert sum(len(o) for o in out) == 5000 - counts.lost + counts.duplicated
    copies = [c for o in out for c in o]
    corrupted = [p for _, p in copies if p != data]
    assert len(corrupted) == counts.corrupted > 0
    assert all(sum(a != b for a, b in zip(p, data, strict=True)) == 1 for p in corrupted)
    late = [d for d, _ in copies if d >= 2.0]
    assert len(late) == counts.reordered > 0
    assert all(0.05 <= d <= 0.06 or 2.05 <= d <= 2.06 for d, _ in copies)


def test_no_faults_forward_everything_unchanged() -> None:
    counts = UdpCounts()
    assert plan(b"x", UdpFaults(), random.Random(0), counts) == [(0.0, b"x")]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UdpRelayError, match="loss must be a probability"):
        UdpFaults(loss=1.5)
    with pytest.raises(UdpRelayError, match="delay must be seconds"):
        UdpFaults(delay=-1)


def _receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Room for every datagram the relay forwards while this process is not reading: the
    # default buffer (208 KiB) holds only about 250 of them (each costs a kernel buffer of
    # about 800 bytes), and a loaded CI worker dropped 4 of 260 there, not in the relay.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def _drain(sock: socket.socket, quiet: float = 0.3) -> list[bytes]:
    got = []
    sock.settimeout(quiet)
    try:
        while True:
            got.append(sock.recv(65535))
    except TimeoutError:
        return got


def test_relay_loses_duplicates_and_delays_real_datagrams() -> None:
    with _receiver() as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        faults = UdpFaults(loss=0.3, duplicate=0.2)
        with UdpRelay(rx.getsockname(), faults, seed=4) as relay:
            for i in range(300):
                tx.sendto(i.to_bytes(2, "big"), relay.address)
            # Until the relay has handled all 300 and what it forwarded is here: on a loaded
            # machine it can pause longer than one quiet period of _drain.
            got: list[bytes] = []
            deadline = time.monotonic() + 10.0
            while True:
                got += _drain(rx)
                counts = relay.counts
                done = counts.received == 300 and len(got) >= counts.forwarded
                if done or time.monotonic() > deadline:
                    break
        assert counts.received == 300
        assert len(got) == counts.forwarded == 300 - counts.lost + counts.duplicated
        assert counts.lost > 50 and counts.duplicated > 20
        # switched at run time: a delay holds every datagram that long
        with UdpRelay(rx.getsockname(), UdpFaults(delay=0.3)) as relay:
            began = time.monotonic()
            tx.sendto(b"late", relay.address)
            rx.settimeout(2.0)
            assert rx.recv(100) == b"late"
            assert time.monotonic() - began >= 0.29
            relay.set(UdpFaults())
            tx.sendto(b"now", relay.address)
            assert rx.recv(100) == b"now"


def test_relay_reorders_what_it_holds_back() -> None:
    with (
        _receiver() as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        UdpRelay(rx.getsockname(), UdpFaults(reorder=0.3, reorder_delay=0.1)) as relay,
    ):
        for i in range(100):
            tx.sendto(i.to_bytes(2, "big"), relay.address)
            time.sleep(0.002)
        got = [int.from_bytes(d, "big") for d in _drain(rx)]
        assert sorted(got) == list(range(100))
        assert got != sorted(got) and relay.counts.reordered > 10


def test_relay_as_a_process_prints_its_counts_when_stopped() -> None:
    with _receiver() as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        host, port = rx.getsockname()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "healthmgr.chaos.udp_relay",
                "--target",
                f"{host}:{port}",
                "--corrupt",
                "1",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            listen_host, _, listen_port = ready["listen"].rpartition(":")
            tx.sendto(b"\x00" * 32, (listen_host, int(listen_port)))
            assert rx.recv(100) != b"\x00" * 32
            proc.send_signal(signal.SIGTERM)
            counts = json.loads(proc.stdout.readline())
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert (counts["received"], counts["forwarded"], counts["corrupted"]) == (1, 1, 1)

"""Destinations, UDP sending, the sequence file, and the agent's config parsing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from agent.config import (
    ConfigError,
    Destination,
    FileConfig,
    load_file,
    parse_destination,
    parse_key_text,
    resolve,
)
from agent.sender import SequenceFile, UdpSender, pick_destinations, state_file
from agent.vrrp import KeepalivedCheck

A, B, C = Destination("10.0.0.1", 5555), Destination("10.0.0.2", 5555), Destination("::1", 5556)


def test_round_robin_like_octavia() -> None:
    dests = (A, B, C)
    picked = [pick_destinations(dests, "round_robin", i) for i in range(6)]
    assert picked == [(A,), (B,), (C,), (A,), (B,), (C,)]


def test_all_mode_and_no_destinations() -> None:
    assert pick_destinations((A, B), "all", 3) == (A, B)
    assert pick_destinations((), "round_robin", 0) == ()
    with pytest.raises(ValueError, match="send_to"):
        pick_destinations((A,), "random", 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:5555", Destination("192.0.2.1", 5555)),
        ("192.0.2.1", Destination("192.0.2.1", 5555)),
        ("[2001:db8::1]:6000", Destination("2001:db8::1", 6000)),
        ("[2001:db8::1]", Destination("2001:db8::1", 5555)),
        ("2001:db8::1", Destination("2001:db8::1", 5555)),
        ("hm.example:7000", Destination("hm.example", 7000)),
    ],
)
def test_parse_destination(text: str, expected: Destination) -> None:
    assert parse_destination(text) == expected


@pytest.mark.parametrize("text", ["", ":5555", "1.2.3.4:0", "1.2.3.4:x", "[::1", "[::1]x"])
def test_parse_destination_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_destination(text)


def test_destination_str() -> None:
    assert str(Destination("::1", 5)) == "[::1]:5" and str(A) == "10.0.0.1:5555"


def _receivers(n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
        out.append(s)
    return out


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(2048))
        except TimeoutError:
            return got


@pytest.mark.parametrize("mode", ["round_robin", "all"])
async def test_udp_sender_modes(mode: str) -> None:
    receivers = _receivers(2)
    dests = tuple(Destination("127.0.0.1", r.getsockname()[1]) for r in receivers)
    sender = UdpSender(dests, mode)
    try:
        for i in range(4):
            results = await sender.send(b"hb%d" % i)
            assert all(err is None for _, err in results)
    finally:
        sender.close()
    got = [_drain(r) for r in receivers]
    for r in receivers:
        r.close()
    if mode == "round_robin":
        assert got == [[b"hb0", b"hb2"], [b"hb1", b"hb3"]]
    else:
        assert got == [[b"hb0", b"hb1", b"hb2", b"hb3"]] * 2


async def test_udp_sender_ipv6() -> None:
    try:
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with rx:
        rx.settimeout(1)
        sender = UdpSender((Destination("::1", rx.getsockname()[1]),))
        assert (await sender.send(b"six"))[0][1] is None
        sender.close()
        assert rx.recv(16) == b"six"


async def test_udp_sender_reports_errors_and_carries_on() -> None:
    (rx,) = _receivers(1)
    good = Destination("127.0.0.1", rx.getsockname()[1])
    bad = Destination("name.invalid", 5555)  # never resolves (RFC 6761)
    sender = UdpSender((bad, good), "all")
    with trio.fail_after(10):
        results = await sender.send(b"x")
    sender.close()
    assert results[0][0] == bad and results[0][1] is not None
    assert results[1] == (good, None)
    assert _drain(rx) == [b"x"]
    rx.close()


def test_sequence_survives_restarts(tmp_path: Path) -> None:
    seq = SequenceFile(tmp_path, now_ms=1_000, block=10)
    sent = [seq.next() for _ in range(25)]
    assert sent == list(range(1_000, 1_025))
    assert int(state_file(tmp_path).read_text()) == 1_030  # reserved ahead, in blocks
    # Restart (clock went backwards, even): resumes above everything sent.
    again = SequenceFile(tmp_path, now_ms=5, block=10)
    assert again.next() == 1_030 > max(sent)
    # Clock ahead of the file: the clock floor wins.
    later = SequenceFile(tmp_path, now_ms=9_999, block=10)
    assert later.next() == 9_999


def test_sequence_corrupt_file_resumes_from_clock(tmp_path: Path) -> None:
    state_file(tmp_path).write_text("garbage")
    seq = SequenceFile(tmp_path, now_ms=777)
    assert seq.warning is not None and "heartbeat-seq" in seq.warning
    assert seq.next() == 777
    assert int(state_file(tmp_path).read_text()) > 777


def test_sequence_store_failure_hands_out_nothing(tmp_path: Path) -> None:
    seq = SequenceFile(tmp_path / "gone", now_ms=10)
    with pytest.raises(OSError):
        seq.next()
    (tmp_path / "gone").mkdir()
    assert seq.next() == 10  # the number was not consumed by the failure


# ---------------------------------------------------------------- config


HEX = "ab" * 32
AMP = "6f1c0d2e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("text", "key_id", "amphora"),
    [
        (HEX + "\n", None, None),
        ("q" * 43 + "=", None, None),  # base64 of 32 bytes
        # The three output formats of `healthmgr keys derive`:
        (f"amphora_id: {AMP}\nkey_id: 4\nkey: {HEX}\n", 4, AMP),
        ('{"amphora_id": "' + AMP + '", "key_id": 4, "key": "' + HEX + '"}', 4, AMP),
        (f"4 {HEX}\n", 4, None),
    ],
)
def test_parse_key_text(text: str, key_id: int | None, amphora: str | None) -> None:
    provisioned = parse_key_text(text)
    assert (provisioned.key_id, provisioned.amphora_id) == (key_id, amphora)
    assert len(provisioned.key) == 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abcd", "32 bytes"),
        ("not a key!", "neither hex nor base64"),
        ('{"x": 1}', "JSON key"),
        ("key_id: 1\n", "no 'key: <hex>' line"),
        (f"70000 {HEX}", "outside 0..65535"),
        (f"one {HEX}", "not an integer"),
    ],
)
def test_parse_key_text_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_key_text(text)


def test_flags_override_file(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("cd" * 32)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[amphora_agent]\namphora_id = "6F1C0D2E-0000-4000-8000-000000000001"\n'
        '[health_manager]\ncontroller_ip_port_list = ["10.0.0.1:5555", "10.0.0.2"]\n'
        f'heartbeat_key_id = 2\nheartbeat_key_file = "{key}"\nsend_to = "all"\n'
    )
    file = load_file(cfg)
    config = resolve(file, {})
    assert config.amphora_id.hex() == "6f1c0d2e00004000800000000000000" + "1"
    assert config.destinations == (A, B)
    assert (config.key_id, config.key, config.send_to) == (2, bytes.fromhex("cd" * 32), "all")
    assert config.interval == 10.0
    over = resolve(file, {"controllers": ["127.0.0.1:1"], "interval": 0.5, "key_id": 9})
    assert over.destinations == (Destination("127.0.0.1", 1),)
    assert (over.interval, over.key_id) == (0.5, 9)


def test_bad_send_to(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[health_manager]\nsend_to = "some"\n')
    with pytest.raises(ConfigError, match=r"health_manager.send_to"):
        load_file(cfg)


def test_key_id_from_json_key_file(tmp_path: Path) -> None:
    key = tmp_path / "k.json"
    key.write_text('{"key_id": 3, "key": "' + "ef" * 32 + '"}')
    config = resolve(
        FileConfig(),
        {
            "amphora_id": "6f1c0d2e-0000-4000-8000-000000000001",
            "controllers": ["10.0.0.1"],
            "key_file": key,
        },
    )
    assert config.key_id == 3


def _resolve_with_key(
    tmp_path: Path, key_text: str, file: FileConfig | None = None, **over: object
):
    key = tmp_path / "k"
    key.write_text(key_text)
    base = {"amphora_id": AMP, "controllers": ["10.0.0.1"], "key_file": key}
    return resolve(file or FileConfig(), {**base, **over})


def test_key_file_for_another_amphora(tmp_path: Path) -> None:
    other = "6f1c0d2e-0000-4000-8000-000000000002"
    with pytest.raises(ConfigError, match=f"is for amphora {other}, not {AMP}"):
        _resolve_with_key(tmp_path, f"amphora_id: {other}\nkey_id: 1\nkey: {HEX}\n")


def test_key_id_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds a key for key id 1"):
        _resolve_with_key(tmp_path, f"1 {HEX}", key_id=2)
    assert _resolve_with_key(tmp_path, f"1 {HEX}", key_id=1).key_id == 1


def test_timing_and_keepalived_options(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text(HEX)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[amphora_agent]\namphora_id = "{AMP}"\n'
        'keepalived_pid_file = "/run/k.pid"\nkeepalived_config_file = "/etc/k.conf"\n'
        '[health_manager]\ncontroller_ip_port_list = ["10.0.0.1"]\nheartbeat_key_id = 1\n'
        f'heartbeat_key_file = "{key}"\npoll_interval = 0.5\ncoalesce_window = 0.1\n'
    )
    config = resolve(load_file(cfg), {})
    assert (config.poll_interval, config.coalesce_window) == (0.5, 0.1)
    assert config.timing.poll_every == 0.5
    assert config.keepalived == KeepalivedCheck(Path("/run/k.pid"), Path("/etc/k.conf"))
    over = resolve(load_file(cfg), {"poll_interval": 2.0, "keepalived_pid_file": Path("/x")})
    assert over.poll_interval == 2.0 and over.keepalived is not None
    assert over.keepalived.pid_file == Path("/x")
    # Defaults: poll every second, 200 ms window, no keepalived check.
    plain = _resolve_with_key(tmp_path, HEX, key_id=1)
    assert (plain.poll_interval, plain.coalesce_window, plain.keepalived) == (1.0, 0.2, None)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[health_manager]\npoll_interval = 0\n", "health_manager.poll_interval"),
        ("[health_manager]\ncoalesce_window = -1\n", "health_manager.coalesce_window"),
    ],
)
def test_bad_timing_options(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_file(cfg)


def test_keepalived_config_file_needs_the_pid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[amphora_agent]\nkeepalived_config_file = "/etc/k.conf"\n')
    with pytest.raises(ConfigError, match="keepalived_pid_file is not"):
        _resolve_with_key(tmp_path, HEX, key_id=1, file=load_file(cfg))

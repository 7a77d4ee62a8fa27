"""The one host:port parser: the agent and the manager read addresses alike."""

from __future__ import annotations

import pytest

from healthmgr.wire.addresses import format_peer, join_host_port, split_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:5555", ("192.0.2.1", 5555)),
        (" hm.example:7000 ", ("hm.example", 7000)),
        ("[2001:db8::1]:6000", ("2001:db8::1", 6000)),
    ],
)
def test_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected
    assert split_host_port(join_host_port(*expected)) == expected


@pytest.mark.parametrize("text", ["192.0.2.1", "2001:db8::1", "[2001:db8::1]", "2001:db8::1:5555"])
def test_a_bare_host_takes_the_default_port_or_is_refused(text: str) -> None:
    assert split_host_port(text, default_port=5555) == (text.strip("[]"), 5555)
    with pytest.raises(ValueError, match="is not host:port"):
        split_host_port(text)


@pytest.mark.parametrize(
    "text", ["", ":5555", "1.2.3.4:0", "1.2.3.4:x", "1.2.3.4:65536", "[::1", "[::1]x", "[]:80"]
)
def test_refused(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text, default_port=5555)


def test_port_zero_when_allowed() -> None:
    assert split_host_port("127.0.0.1:0", allow_zero_port=True) == ("127.0.0.1", 0)


def test_format_peer() -> None:
    assert format_peer(("::1", 5555, 0, 0)) == "[::1]:5555"
    assert format_peer(("10.0.0.1", 1)) == "10.0.0.1:1"
    assert format_peer("unix") == "unix"

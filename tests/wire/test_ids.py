"""The one pair of UUID converters: canonical text <-> 16 bytes, and the lenient parser."""

from __future__ import annotations

import uuid

import pytest

from healthmgr.wire.ids import canonical_id, id_bytes, id_str, parse_id

TEXT = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def test_round_trip_matches_uuid() -> None:
    for _ in range(100):
        u = uuid.uuid4()
        assert id_bytes(str(u)) == u.bytes
        assert id_str(u.bytes) == str(u)
    assert id_bytes(TEXT.upper()) == uuid.UUID(TEXT).bytes


@pytest.mark.parametrize(
    "text",
    [
        "",
        TEXT[:-1],
        TEXT + "0",
        "{" + TEXT[1:-1] + "}",
        TEXT.replace("-", ""),
        TEXT[:8] + "-" + TEXT[9:].replace("-", "", 1) + "-",  # hyphens in other places
        TEXT[:35] + " ",
        " " + TEXT[1:],
        TEXT.replace("a", "g"),
    ],
)
def test_id_bytes_takes_the_canonical_form_only(text: str) -> None:
    with pytest.raises(ValueError, match="is not a UUID"):
        id_bytes(text)


def test_id_str_wants_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes, not 15"):
        id_str(b"\x00" * 15)


def test_parse_id_takes_what_an_operator_types() -> None:
    raw = uuid.UUID(TEXT).bytes
    for text in (
        TEXT,
        TEXT.upper(),
        "{" + TEXT + "}",
        TEXT.replace("-", ""),
        f" {TEXT}\n",
        "urn:uuid:" + TEXT,
    ):
        assert parse_id(text) == raw
        assert canonical_id(text) == TEXT
    with pytest.raises(ValueError):
        parse_id("not-a-uuid")
    assert canonical_id("web") is None

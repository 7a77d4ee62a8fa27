"""UUIDs: 16 raw bytes in memory and on the wire, canonical text in the
database, the logs and the configuration.

The one pair of converters of the tree. :func:`id_bytes` and :func:`id_str`
are on hot paths (the codecs, the database edge), so they take and give the
canonical form only (8-4-4-4-12 hex digits; ``id_bytes`` accepts either case)
without ``uuid.UUID``, about three times faster and just as strict.
:func:`parse_id` takes what an operator types (braces, ``urn:uuid:``, no
hyphens, surrounding space), through ``uuid.UUID``.
"""

from __future__ import annotations

import uuid

Id = bytes  # 16 bytes, uuid.UUID(...).bytes


def id_bytes(text: str) -> Id:
    """16 bytes of a canonical UUID text; ValueError for anything else."""
    if len(text) == 36 and text[8:24:5] == "----":
        try:
            raw = bytes.fromhex(text.replace("-", ""))
        except ValueError:
            raw = b""
        # Extra hyphens or whitespace (which fromhex skips) leave < 16 bytes.
        if len(raw) == 16:
            return raw
    raise ValueError(f"{text!r:.60} is not a UUID")


def id_str(raw: Id) -> str:
    """Canonical text (lower case, as stored in the database) of a 16-byte id."""
    if len(raw) != 16:
        raise ValueError(f"an id is 16 bytes, not {len(raw)}")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_id(text: str) -> Id:
    """16 bytes of a UUID in any form ``uuid.UUID`` reads; ValueError if it is none."""
    return uuid.UUID(text.strip()).bytes


def canonical_id(text: str) -> str | None:
    """The canonical text of a UUID given in any form; None if it is not a UUID."""
    try:
        return id_str(parse_id(text))
    except ValueError:
        return None

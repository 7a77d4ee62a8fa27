"""Octavia's own heartbeat envelope, decoded into the native Heartbeat value.

Lets an existing Octavia fleet (amphora-agent ``health_daemon``) report to
healthmgr while it migrates to the native format. See docs/octavia-compat.md
for what is accepted and what it does not guarantee.

Envelope (as Octavia's agent builds it)::

    zlib(json(message), level 9) || HMAC-SHA256(heartbeat_key, zlib bytes)

The digest is the 64-character lowercase hex form; agents from before that
change appended the raw 32 bytes. As Octavia does, the hex form is tried
first, then the raw one. The HMAC is checked (constant time) before anything
is decompressed or parsed, and decompression stops at ``MAX_JSON_BYTES``.

Message versions (field ``ver``, absent on the oldest agents = 1):

* 1: pools nested in each listener (``listeners.<id>.pools``), keyed by pool
  id or ``<pool_id>:<listener_id>``; counters absolute.
* 2: pools at the top level (``pools``), keyed ``<pool_id>:<listener_id>``
  (HAProxy) or ``<pool_id>`` (UDP/LVS listeners); counters absolute.
* 3: as 2, but rx/tx/totconns/ereq are deltas since the previous message
  (``conns`` stays a gauge).

This module is pure: no I/O, no clock (the caller passes ``received_at_ms``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import zlib
from typing import Any

from healthmgr.wire.errors import Reason, Rejected
from healthmgr.wire.haproxy_status import (
    listener_state_from_haproxy,
    member_state_from_haproxy,
    pool_state_from_haproxy,
)
from healthmgr.wire.ids import Id, id_bytes, id_str
from healthmgr.wire.limits import (
    MAX_LISTENERS,
    MAX_MEMBERS,
    MAX_MEMBERS_PER_POOL,
    MAX_POOLS,
    MAX_UINT64,
)
from healthmgr.wire.values import (
    Heartbeat,
    ListenerReport,
    ListenerState,
    MemberReport,
    MemberState,
    PoolReport,
    PoolState,
    WireFormat,
)

# --- limits ---------------------------------------------------------------
# Counts are the native format's (healthmgr.wire.limits); the rest is specific
# to Octavia's envelope.
MAX_DATAGRAM = 65535  # largest UDP payload; Octavia's receiver reads 64 KiB
MAX_JSON_BYTES = 256 * 1024  # decompressed size bound (zlib bomb defence)
MAX_STATUS_LEN = 64  # HAProxy's longest status is ~20 characters
# '{' and '[' in the decompressed text: a cheap bound on the number (hence
# the depth) of containers json.loads will build. Three per listener
# (listener, stats, v1 pools), two per pool (pool, members), some slack.
MAX_CONTAINERS = 16 + 3 * MAX_LISTENERS + 2 * MAX_POOLS

HEX_DIGEST_LEN = 64
RAW_DIGEST_LEN = 32
_MIN_ZLIB = 8  # smallest zlib stream: 2-byte header, empty block, Adler-32
SUPPORTED_VERSIONS = (1, 2, 3)


# --- envelope -------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _keyed_hmac(key: bytes) -> hmac.HMAC:
    # Keyed once per key; each datagram pays only .copy() + update.
    return hmac.new(key, digestmod=hashlib.sha256)


def _mac(key: bytes, payload: bytes) -> hmac.HMAC:
    mac = _keyed_hmac(key).copy()
    mac.update(payload)
    return mac


def verify(datagram: bytes, key: bytes) -> bytes:
    """Return the signed (still compressed) payload, or raise Rejected."""
    size = len(datagram)
    if size > MAX_DATAGRAM:
        raise Rejected(Reason.OVER_LIMIT, f"datagram of {size} bytes > {MAX_DATAGRAM}")
    if size < RAW_DIGEST_LEN + _MIN_ZLIB:
        raise Rejected(Reason.MALFORMED, f"datagram of {size} bytes is too short")
    if size >= HEX_DIGEST_LEN + _MIN_ZLIB:
        payload = datagram[:-HEX_DIGEST_LEN]
        expected = _mac(key, payload).hexdigest().encode("ascii")
        if hmac.compare_digest(expected, datagram[-HEX_DIGEST_LEN:]):
            return payload
    payload = datagram[:-RAW_DIGEST_LEN]
    if hmac.compare_digest(_mac(key, payload).digest(), datagram[-RAW_DIGEST_LEN:]):
        return payload
    raise Rejected(Reason.BAD_SIGNATURE, "HMAC-SHA256 (hex or raw) does not match heartbeat_key")


def decompress(payload: bytes) -> bytes:
    """Inflate at most MAX_JSON_BYTES; a larger output is a bomb."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, MAX_JSON_BYTES)
    except zlib.error as exc:
        raise Rejected(Reason.MALFORMED, f"zlib: {exc}") from None
    if not inflater.eof:
        if len(text) >= MAX_JSON_BYTES:
            raise Rejected(Reason.OVER_LIMIT, f"decompresses to more than {MAX_JSON_BYTES} bytes")
        raise Rejected(Reason.MALFORMED, "zlib stream is truncated")
    if inflater.unused_data:
        raise Rejected(Reason.MALFORMED, "bytes after the end of the zlib stream")
    return text


def parse_json(text: bytes) -> dict[str, Any]:
    containers = text.count(b"{") + text.count(b"[")
    if containers > MAX_CONTAINERS:
        raise Rejected(Reason.OVER_LIMIT, f"{containers} JSON objects/arrays > {MAX_CONTAINERS}")
    try:
        obj = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise Rejected(Reason.MALFORMED, "message is not UTF-8") from None
    except RecursionError:
        raise Rejected(Reason.MALFORMED, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, int too long to convert
        raise Rejected(Reason.MALFORMED, f"not JSON: {exc}") from None
    if type(obj) is not dict:
        raise Rejected(Reason.MALFORMED, f"message is {_kind(obj)}, not an object")
    return obj


# --- message -> Heartbeat -------------------------------------------------
def decode(datagram: bytes, key: bytes, *, received_at_ms: int) -> Heartbeat:
    """Verify and decode one Octavia heartbeat datagram.

    ``key`` is the fleet's ``heartbeat_key`` as bytes (Octavia uses the UTF-8
    encoding of the configured string). Octavia messages carry no send time,
    so ``sent_at_ms`` is ``received_at_ms``. Raises only :class:`Rejected`.
    """
    message = parse_json(decompress(verify(datagram, key)))
    return message_to_heartbeat(message, received_at_ms=received_at_ms)


def message_to_heartbeat(message: dict[str, Any], *, received_at_ms: int) -> Heartbeat:
    """Validate an already-parsed Octavia message dict (raises Rejected)."""
    amphora_id = _uuid(message.get("id"), "id")
    seq = message.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_UINT64:
        shown = f"{seq!r:.32} is" if type(seq) is int else f"is {_kind(seq)},"
        raise Rejected(Reason.MALFORMED, f"seq {shown} not an unsigned 64-bit integer")
    version = _version(message)
    listeners_raw = _object(message.get("listeners"), "listeners")
    if len(listeners_raw) > MAX_LISTENERS:
        raise Rejected(Reason.OVER_LIMIT, f"{len(listeners_raw)} listeners > {MAX_LISTENERS}")
    budget = _Budget()
    listeners = []
    pools: list[PoolReport] = []
    for lid_text, body in listeners_raw.items():
        lid = _uuid(lid_text, "listener id")
        listener = _object(body, f"listener {lid_text}")
        listeners.append(_listener(lid, lid_text, listener))
        if version == 1:
            nested = _object(listener.get("pools", {}), f"listener {lid_text} pools")
            pools.extend(_pools(nested, lid, budget))
    if version >= 2:
        pools.extend(_pools(_object(message.get("pools", {}), "pools"), None, budget))
    return Heartbeat(
        amphora_id=amphora_id,
        seq=seq,
        sent_at_ms=received_at_ms,
        interval_ms=0,
        counters_epoch=0,
        listeners=tuple(listeners),
        pools=tuple(pools),
        format=WireFormat.OCTAVIA,
        counters_are_deltas=version >= 3,
    )


class _Budget:
    """Running totals of pools and members across the whole message."""

    __slots__ = ("members", "pools")

    def __init__(self) -> None:
        self.pools = 0
        self.members = 0

    def take(self, pools: int, members: int) -> None:
        self.pools += pools
        self.members += members
        if self.pools > MAX_POOLS:
            raise Rejected(Reason.OVER_LIMIT, f"more than {MAX_POOLS} pools")
        if self.members > MAX_MEMBERS:
            raise Rejected(Reason.OVER_LIMIT, f"more than {MAX_MEMBERS} members")


def _version(message: dict[str, Any]) -> int:
    version = message.get("ver", 1)
    if type(version) is not int:
        raise Rejected(Reason.MALFORMED, f"ver is {_kind(version)}, not an integer")
    if version not in SUPPORTED_VERSIONS:
        raise Rejected(Reason.BAD_VERSION, f"message version {version} is not 1, 2 or 3")
    return version


def _listener(lid: Id, lid_text: str, body: dict[str, Any]) -> ListenerReport:
    state = listener_state_from_haproxy(_status(body.get("status"), lid_text))
    # A missing stats object or counter (old agents had no ereq) reads as 0.
    stats = _object(body.get("stats", {}), f"listener {lid_text} stats")
    get = stats.get
    rx, tx, conns, totconns, ereq = values = (
        get("rx", 0),
        get("tx", 0),
        get("conns", 0),
        get("totconns", 0),
        get("ereq", 0),
    )
    for value in values:
        if type(value) is not int or not 0 <= value <= MAX_UINT64:
            raise Rejected(
                Reason.MALFORMED,
                f"listener {lid_text} stats: {value!r:.48} is not an unsigned 64-bit integer",
            )
    return ListenerReport(lid, state, conns, rx, tx, totconns, ereq)


def _pools(raw: dict[str, Any], enclosing: Id | None, budget: _Budget) -> list[PoolReport]:
    budget.take(len(raw), 0)
    reports = []
    for key, body in raw.items():
        pool_id, listener_id = _pool_key(key, enclosing)
        pool = _object(body, f"pool {key}")
        members_raw = _object(pool.get("members", {}), f"pool {key} members")
        if len(members_raw) > MAX_MEMBERS_PER_POOL:
            raise Rejected(Reason.OVER_LIMIT, f"pool {key} has over {MAX_MEMBERS_PER_POOL} members")
        budget.take(0, len(members_raw))
        members = [
            MemberReport(_uuid(mid, "member id"), member_state_from_haproxy(_status(text, mid)))
            for mid, text in members_raw.items()
        ]
        state = pool_state_from_haproxy(_status(pool.get("status"), key))
        reports.append(PoolReport(pool_id, listener_id, state, tuple(members)))
    return reports


def _pool_key(key: Any, enclosing: Id | None) -> tuple[Id, Id | None]:
    # HAProxy backends are named "<pool>:<listener>"; UDP (LVS) pools and
    # old multi-process configs use the bare pool id.
    if type(key) is not str:
        raise Rejected(Reason.MALFORMED, f"pool key is {_kind(key)}, not a string")
    pool_text, sep, listener_text = key.rpartition(":")
    if not sep:
        return _uuid(key, "pool id"), enclosing
    return _uuid(pool_text, "pool id"), _uuid(listener_text, "pool's listener id")


def _object(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise Rejected(Reason.MALFORMED, f"{what} is {_kind(value)}, not a JSON object")
    return value


def _status(value: Any, owner: Any) -> str:
    # The owner's id rather than a ready message: formatting costs on the hot path.
    if type(value) is not str:
        raise Rejected(Reason.MALFORMED, f"status of {owner!r:.48} is {_kind(value)}, not a string")
    if len(value) > MAX_STATUS_LEN:
        raise Rejected(
            Reason.OVER_LIMIT, f"status of {owner!r:.48} is over {MAX_STATUS_LEN} characters"
        )
    return value


def _uuid(text: Any, what: str) -> Id:
    """Canonical 8-4-4-4-12 hex UUID -> 16 bytes (``id_bytes``: 3x faster than uuid.UUID)."""
    if type(text) is str:
        try:
            return id_bytes(text)
        except ValueError:
            raise Rejected(Reason.MALFORMED, f"{what} {text!r:.48} is not a UUID") from None
    raise Rejected(Reason.MALFORMED, f"{what} is {_kind(text)}, not a UUID string")


_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
}


def _kind(value: Any) -> str:
    if value is None:
        return "missing or null"
    return _JSON_KINDS.get(type(value), f"a {type(value).__name__}")


# --- encoder (Octavia agent's side; tests, vectors, benchmarks) ------------
def encode(message: dict[str, Any], key: bytes, *, hex_digest: bool = True) -> bytes:
    """Build a datagram as Octavia's amphora agent does."""
    payload = zlib.compress(json.dumps(message).encode("utf-8"), 9)
    mac = _mac(key, payload)
    return payload + (mac.hexdigest().encode("ascii") if hex_digest else mac.digest())


_LISTENER_TEXT = {
    ListenerState.OPEN: "OPEN",
    ListenerState.FULL: "FULL",
    ListenerState.STOP: "STOP",
    ListenerState.OTHER: "DOWN",  # what Octavia's v1 agent sends for a stopped listener
}
_POOL_TEXT = {PoolState.UP: "UP", PoolState.DOWN: "DOWN", PoolState.OTHER: "UNKNOWN"}
_MEMBER_TEXT = {
    MemberState.UP: "UP",
    MemberState.DOWN: "DOWN",
    MemberState.DRAIN: "DRAIN",
    MemberState.MAINT: "MAINT",
    MemberState.NO_CHECK: "no check",
    MemberState.OTHER: "NOLB",  # a real HAProxy state that Octavia ignores
}


def heartbeat_to_message(hb: Heartbeat, version: int = 3) -> dict[str, Any]:
    """The Octavia JSON dict an agent of ``version`` would send for ``hb``.

    Counters are copied as they are (the caller decides whether they are
    absolute or deltas). In version 1 every pool must name its listener.
    """
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"Octavia message version must be 1, 2 or 3, not {version}")
    listeners: dict[str, Any] = {}
    for lst in hb.listeners:
        listeners[id_str(lst.id)] = {
            "status": _LISTENER_TEXT[lst.status],
            "stats": {
                "tx": lst.bytes_out,
                "rx": lst.bytes_in,
                "conns": lst.current_connections,
                "totconns": lst.total_connections,
                "ereq": lst.request_errors,
            },
        }
    message: dict[str, Any] = {"id": id_str(hb.amphora_id), "seq": hb.seq, "listeners": listeners}
    if version == 1:
        _nest_pools_v1(hb, listeners)
    else:
        message["pools"] = {_pool_key_text(p): _pool_body(p) for p in hb.pools}
    message["ver"] = version
    return message


def _nest_pools_v1(hb: Heartbeat, listeners: dict[str, Any]) -> None:
    for body in listeners.values():
        body["pools"] = {}
    for pool in hb.pools:
        if pool.listener_id is None or id_str(pool.listener_id) not in listeners:
            raise ValueError(f"v1 pool {id_str(pool.id)} needs one of the reported listeners")
        listeners[id_str(pool.listener_id)]["pools"][id_str(pool.id)] = _pool_body(pool)


def _pool_key_text(pool: PoolReport) -> str:
    if pool.listener_id is None:
        return id_str(pool.id)
    return f"{id_str(pool.id)}:{id_str(pool.listener_id)}"


def _pool_body(pool: PoolReport) -> dict[str, Any]:
    return {
        "status": _POOL_TEXT[pool.status],
        "members": {id_str(m.id): _MEMBER_TEXT[m.status] for m in pool.members},
    }

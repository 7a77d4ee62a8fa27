"""HAProxy status strings -> the wire format's state enums.

Pure functions shared by the Octavia decoder (whose agents send HAProxy's raw
strings) and our agent (which reads the same strings from ``show stat``).

HAProxy vocabulary (``show stat`` CSV, column ``status``):

* frontend: ``OPEN``, ``FULL`` (maxconn reached), ``STOP``;
* backend: ``UP``, ``DOWN``;
* server: ``UP``, ``DOWN``, transitional ``UP 1/3`` / ``DOWN 1/2`` (a check
  streak in progress: the current state is the first word), ``NOLB``,
  ``DRAIN``, ``DRAIN (agent)``, ``MAINT``, ``MAINT(via)``, ``MAINT (via x/y)``,
  ``MAINT(resolution)``, ``no check``; Octavia's UDP (keepalived) path adds
  ``RESTARTING``.

Anything not listed maps to ``OTHER``: the manager then leaves the status as
it is, which is what Octavia does with a string it does not know.
"""

from __future__ import annotations

from healthmgr.wire.values import ListenerState, MemberState, PoolState

_LISTENER = {"OPEN": ListenerState.OPEN, "FULL": ListenerState.FULL, "STOP": ListenerState.STOP}
_POOL = {"UP": PoolState.UP, "DOWN": PoolState.DOWN}
# Exact strings first: the common case is one dict lookup.
_MEMBER_EXACT = {
    "UP": MemberState.UP,
    "DOWN": MemberState.DOWN,
    "DRAIN": MemberState.DRAIN,
    "MAINT": MemberState.MAINT,
    "no check": MemberState.NO_CHECK,
}


def listener_state_from_haproxy(status: str) -> ListenerState:
    """Frontend status (``OPEN``/``FULL``/``STOP``); anything else is OTHER."""
    return _LISTENER.get(status, ListenerState.OTHER)


def pool_state_from_haproxy(status: str) -> PoolState:
    """Backend status (``UP``/``DOWN``); anything else is OTHER."""
    return _POOL.get(status, PoolState.OTHER)


def member_state_from_haproxy(status: str, weight: int | None = None) -> MemberState:
    """Server status, normalised.

    ``weight`` is the server's current weight when known: some HAProxy
    versions report a drained server (weight 0) as ``UP``, so UP with weight 0
    is DRAIN (Octavia's agent applies the same correction).
    """
    state = _MEMBER_EXACT.get(status)
    if state is None:
        state = _member_state_by_prefix(status)
    if state is MemberState.UP and weight == 0:
        return MemberState.DRAIN
    return state


def _member_state_by_prefix(status: str) -> MemberState:
    # "UP 1/3" is still UP (going down after more failed checks); "DOWN 1/2"
    # still DOWN. Match the word, not any string starting with "UP".
    word, _, _ = status.partition(" ")
    if word in ("UP", "DOWN") and status != word:
        return MemberState.UP if word == "UP" else MemberState.DOWN
    if status.startswith("MAINT"):  # MAINT(via), MAINT (via b/s), MAINT(resolution)
        return MemberState.MAINT
    if status.startswith("DRAIN"):  # DRAIN (agent)
        return MemberState.DRAIN
    return MemberState.OTHER  # NOLB, RESTARTING, unknown: leave unchanged

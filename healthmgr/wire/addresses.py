"""``host:port`` text: the one parser and formatter of the tree.

Here because the agent and the manager must read ``controller_ip_port_list``
the same way, and the agent imports :mod:`healthmgr.wire` only. An IPv6
address takes brackets when a port follows (``[2001:db8::1]:5555``, as in
URLs); without brackets, text with several colons is a bare IPv6 address.
"""

from __future__ import annotations

HEARTBEAT_PORT = 5555  # Octavia's default bind_port, and the agent's when none is given


def split_host_port(
    text: str, *, default_port: int | None = None, allow_zero_port: bool = False
) -> tuple[str, int]:
    """``"10.0.0.1:5555"``, ``"[fd00::1]:5555"``, ``"hm.example:5555"`` -> (host, port).

    With ``default_port``, a bare host (``"10.0.0.1"``, ``"fd00::1"``,
    ``"[fd00::1]"``) gets that port; without, it is an error. ValueError names
    the text and what is wrong.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ipv6]:port")
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a name or an IPv4 address, or a bare IPv6 address
        host, port_text = text, None
    if not host:
        raise ValueError(f"{text!r}: no host")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} is not host:port")
        return host, default_port
    low = 0 if allow_zero_port else 1
    if not port_text.isdigit() or not low <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be {low}-65535")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    """The text :func:`split_host_port` reads back: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_peer(source: object) -> str:
    """A socket address (``(host, port, ...)``) as ``host:port``; anything else as ``str``."""
    if isinstance(source, tuple) and len(source) >= 2:
        return join_host_port(str(source[0]), source[1])
    return str(source)

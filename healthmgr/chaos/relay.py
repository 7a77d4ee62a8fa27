"""A TCP relay whose behaviour is switched at run time: network faults in user space.

This machine's kernel has no netem and the shared database servers are never
stopped, so faults are made between a client and its server::

    manager --> relay 127.0.0.1:PORT --> database 127.0.0.1:5432

Modes (one command each; ``delay`` takes seconds):

``pass``
    bytes are forwarded both ways.
``blackhole``
    connections stay open; bytes in both directions, and a close, are read
    and dropped; new connections are accepted and treated the same. The
    relay's kernel still acknowledges every byte, as for a frozen server or a
    stuck proxy, so TCP keepalives do not notice (a partition that drops
    packets is another fault: see docs/database.md). Leaving ``blackhole``
    resets every connection that lost bytes, since its stream is corrupt.
``refuse``
    existing connections are reset and the listening socket is closed, so a
    new connection is refused (ECONNREFUSED); any other mode listens again
    on the same port.
``delay SECONDS``
    every chunk is forwarded that long after it arrived, in order.

In a test, :class:`Relay` runs the relay in a thread of the calling process::

    with Relay(("127.0.0.1", 5432)) as relay:
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/db"
        relay.blackhole()   # returns once the mode is in force
        relay.passthrough()

As a process, controlled over a Unix socket (one command a line, one JSON
object a line in reply; :class:`RelayProcess` starts one and offers the same
methods)::

    python -m healthmgr.chaos.relay --listen 127.0.0.1:0 --target 127.0.0.1:5432
    {"listen": "127.0.0.1:40123", "control": "/tmp/relay-x/control.sock", "pid": 4242}
    python -m healthmgr.chaos.relay --control /tmp/relay-x/control.sock --send blackhole

It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Self

import trio

from healthmgr.chaos.threaded import READY_TIMEOUT_S, ServerThread
from healthmgr.wire.addresses import join_host_port, split_host_port

Address = tuple[str, int]
CHUNK = 65536
QUEUED_CHUNKS = 64  # per direction; then the relay stops reading (backpressure)
_SOCKET_ERRORS = (OSError, trio.ClosedResourceError, trio.BrokenResourceError)


class RelayError(Exception):
    """The relay refused a command or could not start."""


class Mode(enum.StrEnum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"
    DELAY = "delay"


@dataclass(frozen=True, slots=True)
class Setting:
    """A mode and, for ``delay``, its seconds."""

    mode: Mode
    delay: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Setting:
        """``"pass"``, ``"blackhole"``, ``"refuse"`` or ``"delay 0.5"``."""
        words = text.split()
        try:
            mode = Mode(words[0].lower()) if words else None
        except ValueError:
            mode = None
        if mode is None or len(words) != (2 if mode is Mode.DELAY else 1):
            raise RelayError(f"bad command {text!r}: pass, blackhole, refuse, delay SECONDS")
        if mode is not Mode.DELAY:
            return cls(mode)
        try:
            seconds = float(words[1])
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < 3600:
            raise RelayError(f"bad delay {words[1]!r}: seconds from 0 to 3600")
        return cls(mode, seconds)


@dataclass
class Counters:
    accepted: int = 0
    resets: int = 0
    bytes_forwarded: int = 0
    bytes_dropped: int = 0


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: trio.socket.SocketType) -> None:
        self.client = client
        self.upstream: trio.socket.SocketType | None = None
        self.lost = False  # bytes were dropped: the stream is corrupt
        self.scope = trio.CancelScope()

    def reset(self) -> None:
        """Close both ends with an RST (SO_LINGER 0), not a FIN."""
        self.scope.cancel()
        for sock in (self.client, self.upstream):
            if sock is not None and sock.fileno() != -1:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()


class RelayServer:
    """The relay itself, in trio: :meth:`serve` under a nursery, :meth:`apply` to switch."""

    def __init__(self, target: Address, listen: Address = ("127.0.0.1", 0)) -> None:
        self.target = target
        self.address = listen  # the real port once listening
        self.setting = Setting(Mode.PASS)
        self.counters = Counters()
        self._links: set[_Link] = set()
        self._listener: trio.socket.SocketType | None = None
        self._accepting = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and relay until cancelled; ``started`` with the listening address."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(trio.sleep_forever)  # the nursery outlives the listener
            await self._listen()
            task_status.started(self.address)

    async def apply(self, setting: Setting) -> None:
        """Switch mode; in force when this returns (resets done, listener closed or open)."""
        old, self.setting = self.setting, setting
        if setting.mode is Mode.REFUSE:
            self._stop_listening()
            for link in list(self._links):
                self._reset(link)
            return
        if self._listener is None:
            await self._listen()
        if old.mode is Mode.BLACKHOLE and setting.mode is not Mode.BLACKHOLE:
            for link in list(self._links):
                if link.lost:
                    self._reset(link)

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "mode": str(self.setting.mode),
            "delay": self.setting.delay,
            "listen": _format(self.address),
            "target": _format(self.target),
            "connections": len(self._links),
            "accepted": self.counters.accepted,
            "resets": self.counters.resets,
            "bytes_forwarded": self.counters.bytes_forwarded,
            "bytes_dropped": self.counters.bytes_dropped,
        }

    async def command(self, text: str) -> dict[str, Any]:
        """One control command (a mode, or ``status``) -> the status, or ``ok: false``."""
        if text.strip().lower() != "status":
            try:
                await self.apply(Setting.parse(text))
            except (RelayError, OSError) as e:
                return {"ok": False, "error": str(e)}
        return self.status()

    # -- listening -------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._nursery is not None
        sock = trio.socket.socket(_family(self.address[0]), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            await sock.bind(self.address)
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        self.address = sock.getsockname()[:2]
        self._listener = sock
        self._accepting = trio.CancelScope()
        self._nursery.start_soon(self._accept, sock, self._accepting)

    def _stop_listening(self) -> None:
        self._accepting.cancel()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def _accept(self, sock: trio.socket.SocketType, scope: trio.CancelScope) -> None:
        assert self._nursery is not None
        with scope, contextlib.suppress(*_SOCKET_ERRORS):
            while True:
                conn, _ = await sock.accept()
                self.counters.accepted += 1
                self._nursery.start_soon(self._serve_link, _Link(conn))

    # -- relaying --------------------------------------------------------------

    async def _serve_link(self, link: _Link) -> None:
        self._links.add(link)
        try:
            with link.scope, self._resets_on_error(link):
                if self.setting.mode is Mode.BLACKHOLE:
                    link.lost = True  # never connected upstream: reset when healed
                    await self._drop(link, link.client)
                    return
                upstream = trio.socket.socket(_family(self.target[0]), socket.SOCK_STREAM)
                link.upstream = upstream
                await upstream.connect(self.target)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, link.client, upstream)
                    nursery.start_soon(self._pump, link, upstream, link.client)
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self, link: _Link, src: trio.socket.SocketType, dst: trio.socket.SocketType
    ) -> None:
        """One direction: read, stamp with the delay, hand to :meth:`_deliver`."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](QUEUED_CHUNKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, link, receive, dst)
            with self._resets_on_error(link):
                async with send:
                    while True:
                        data = await src.recv(CHUNK)
                        if self.setting.mode is Mode.BLACKHOLE:
                            self._dropped(link, data)
                            if not data:  # a close is dropped too
                                await trio.sleep_forever()
                            continue
                        if not data:
                            return
                        await send.send((trio.current_time() + self.setting.delay, data))

    async def _deliver(
        self,
        link: _Link,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
        dst: trio.socket.SocketType,
    ) -> None:
        with self._resets_on_error(link):
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    if self.setting.mode is Mode.BLACKHOLE:
                        self._dropped(link, data)
                        continue
                    await _send_all(dst, data)
                    self.counters.bytes_forwarded += len(data)
            dst.shutdown(socket.SHUT_WR)  # forward the close (half-close)

    async def _drop(self, link: _Link, sock: trio.socket.SocketType) -> None:
        while data := await sock.recv(CHUNK):
            self._dropped(link, data)
        await trio.sleep_forever()  # the close is dropped: wait for a heal (reset)

    def _dropped(self, link: _Link, data: bytes) -> None:
        link.lost = True
        self.counters.bytes_dropped += len(data)

    def _reset(self, link: _Link) -> None:
        self.counters.resets += 1
        link.reset()

    @contextlib.contextmanager
    def _resets_on_error(self, link: _Link) -> Iterator[None]:
        """A reset or refusal on one side is passed on to the other as a reset."""
        try:
            yield
        except _SOCKET_ERRORS:
            self._reset(link)


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _format(address: Address) -> str:
    return join_host_port(address[0], address[1])


def parse_address(text: str, *, allow_zero_port: bool = False) -> Address:
    try:
        return split_host_port(text, allow_zero_port=allow_zero_port)
    except ValueError as e:
        raise RelayError(str(e)) from None


# -- controlling it ---------------------------------------------------------------


class _Controls:
    """The mode-switching methods, over :meth:`command`."""

    address: Address

    def command(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return self.address[1]

    def passthrough(self) -> dict[str, Any]:
        return self.command("pass")

    def blackhole(self) -> dict[str, Any]:
        return self.command("blackhole")

    def refuse(self) -> dict[str, Any]:
        return self.command("refuse")

    def delay(self, seconds: float) -> dict[str, Any]:
        return self.command(f"delay {seconds}")

    def status(self) -> dict[str, Any]:
        return self.command("status")


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("ok"):
        raise RelayError(reply.get("error", f"relay refused the command: {reply}"))
    return reply


class Relay(_Controls, ServerThread):
    """The relay in a thread of this process (its own trio loop); a context manager."""

    def __init__(self, target: Address, listen: Address = ("127.0.0.1", 0)) -> None:
        self._server = RelayServer(target, listen)
        ServerThread.__init__(
            self,
            self._server.serve,
            name=f"relay->{_format(target)}",
            what="relay",
            error=RelayError,
        )

    @property
    def address(self) -> Address:  # type: ignore[override]
        return self._server.address

    def command(self, text: str) -> dict[str, Any]:
        return _checked(self.call(self._server.command, text))


class RelayControl:
    """A client of a relay process's control socket."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = READY_TIMEOUT_S) -> None:
        self.path = str(path)
        self.timeout = timeout

    def send(self, text: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            sock.sendall(text.encode() + b"\n")
            reply = sock.makefile("rb").readline()
        if not reply:
            raise RelayError(f"no reply from the relay at {self.path}")
        return json.loads(reply)


class RelayProcess(_Controls):
    """``python -m healthmgr.chaos.relay`` as a child process; a context manager."""

    def __init__(
        self, target: Address, listen: Address = ("127.0.0.1", 0), python: str = sys.executable
    ) -> None:
        self._argv = [
            python,
            "-m",
            "healthmgr.chaos.relay",
            "--listen",
            _format(listen),
            "--target",
            _format(target),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.address = listen
        self.control: RelayControl | None = None

    def start(self) -> Self:
        self.process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            self.close()
            raise RelayError(f"relay process exited before it was ready: {self._argv}")
        ready = json.loads(line)
        self.address = parse_address(ready["listen"])
        self.control = RelayControl(ready["control"])
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self, text: str) -> dict[str, Any]:
        if self.control is None:
            raise RelayError("relay process is not running")
        return _checked(self.control.send(text))

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(READY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the process ------------------------------------------------------------------


async def _serve_control(server: RelayServer, stream: trio.SocketStream) -> None:
    buffer = b""
    async with stream:
        with contextlib.suppress(*_SOCKET_ERRORS):
            while chunk := await stream.receive_some(4096):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    reply = await server.command(line.decode(errors="replace"))
                    await stream.send_all(json.dumps(reply).encode() + b"\n")


async def _run_process(listen: Address, target: Address, control: Path) -> None:
    server = RelayServer(target, listen)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve)
        ctl = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await ctl.bind(str(control))
        ctl.listen(16)
        handler = partial(_serve_control, server)
        nursery.start_soon(trio.serve_listeners, handler, [trio.SocketListener(ctl)])
        ready = {"listen": _format(address), "control": str(control), "pid": os.getpid()}
        print(json.dumps(ready), flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m healthmgr.chaos.relay",
        description="TCP relay with run-time faults (pass, blackhole, refuse, delay SECONDS).",
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any)")
    parser.add_argument("--target", help="host:port to relay to")
    parser.add_argument("--control", help="Unix socket path for commands (default: a temp dir)")
    parser.add_argument("--send", metavar="COMMAND", help="send COMMAND to --control and exit")
    args = parser.parse_args(argv)
    try:
        if args.send is not None:
            if not args.control:
                parser.error("--send needs --control PATH")
            reply = RelayControl(args.control).send(args.send)
            print(json.dumps(reply))
            return 0 if reply.get("ok") else 1
        if not args.target:
            parser.error("--target host:port is required")
        listen = parse_address(args.listen, allow_zero_port=True)
        target = parse_address(args.target)
    except (RelayError, OSError) as e:
        print(f"relay: {e}", file=sys.stderr)
        return 1
    tmp = None if args.control else tempfile.mkdtemp(prefix="relay-")
    control = Path(args.control or Path(tmp or "") / "control.sock")
    try:
        trio.run(_run_process, listen, target, control)
    except OSError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 1
    finally:
        control.unlink(missing_ok=True)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``amphora-agent``: poll HAProxy's stats; send a signed heartbeat on a change and every interval.

    amphora-agent --config /etc/amphora-agent/amphora-agent.toml
    amphora-agent --amphora-id UUID --key-id 1 --key-file KEY \\
        --controller 192.0.2.10:5555 --haproxy-socket /run/haproxy/stats.sock

SIGTERM and SIGINT stop it cleanly (exit 0). A bad configuration is one line on
stderr naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tenacity
import trio

from agent import haproxy
from agent.cadence import Cadence, Why
from agent.config import AgentConfig, ConfigError, FileConfig, load_file, resolve
from agent.report import ReportError, Summary, counters_epoch, reports, summary
from agent.sender import SequenceFile, UdpSender, prepare_state_dir
from healthmgr.wire.native import encode_native
from healthmgr.wire.values import Heartbeat, ListenerReport, PoolReport

log = logging.getLogger("amphora-agent")

# Retries of one HAProxy reading within an interval (a reload can briefly
# refuse the socket) before the heartbeat reports no listeners.
POLL_RETRY_DELAYS = (0.2, 0.5)
# Repeated identical errors are logged at most this often.
ERROR_LOG_EVERY = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amphora-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"amphora-agent {_version()}")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--amphora-id", help="this amphora's UUID")
    p.add_argument("--key-id", type=int, help="id of the master key the key derives from")
    p.add_argument("--key-file", type=Path, help="the amphora's key (healthmgr keys derive)")
    p.add_argument(
        "--controller",
        action="append",
        dest="controllers",
        metavar="IP:PORT",
        help="health manager address (repeatable; replaces controller_ip_port_list)",
    )
    p.add_argument("--haproxy-socket", help="stats socket: a path or ip:port")
    p.add_argument("--interval", type=float, help="seconds between heartbeats (at most)")
    p.add_argument("--poll-interval", type=float, help="seconds between HAProxy readings")
    p.add_argument(
        "--keepalived-pid-file",
        type=Path,
        help="send heartbeats only while the keepalived of this pid file runs",
    )
    p.add_argument("--state-dir", type=Path, help="where the sequence reservation is kept")
    p.add_argument(
        "--once", action="store_true", help="send one heartbeat and exit (1: keepalived is down)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every heartbeat")
    return p


def _version() -> str:
    """The installed distribution's version (the agent ships in the healthmgr package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("healthmgr")
    except PackageNotFoundError:
        return "unknown (not installed)"


def load_config(args: argparse.Namespace) -> AgentConfig:
    file = load_file(args.config) if args.config is not None else FileConfig()
    overrides = {
        "amphora_id": args.amphora_id,
        "key_id": args.key_id,
        "key_file": args.key_file,
        "controllers": args.controllers,
        "haproxy_socket": args.haproxy_socket,
        "interval": args.interval,
        "poll_interval": args.poll_interval,
        "keepalived_pid_file": args.keepalived_pid_file,
        "state_dir": args.state_dir,
    }
    config = resolve(file, overrides)
    prepare_state_dir(config.state_dir)
    return config


class ErrorLog:
    """Log an error when it changes, and a repeated one at most every ERROR_LOG_EVERY s."""

    def __init__(self) -> None:
        self._last: tuple[str, float] | None = None

    def error(self, message: str) -> None:
        now = time.monotonic()
        if self._last is None or self._last[0] != message or now - self._last[1] >= ERROR_LOG_EVERY:
            log.error(message)
            self._last = (message, now)

    def ok(self, message: str) -> None:
        if self._last is not None:
            log.info(message)
            self._last = None


@dataclass(frozen=True, slots=True)
class Reading:
    """What one HAProxy reading reports: listeners and pools (none when HAProxy is gone)."""

    listeners: tuple[ListenerReport, ...] = ()
    pools: tuple[PoolReport, ...] = ()

    @property
    def summary(self) -> Summary:
        return summary(self.listeners, self.pools)


@dataclass
class Agent:
    """The loop's state: the schedule, sequence, last counters epoch, sockets."""

    config: AgentConfig
    sequence: SequenceFile
    sender: UdpSender
    verbose: bool = False
    epoch: int = 0

    def __post_init__(self) -> None:
        self.haproxy_errors = ErrorLog()
        self.send_errors = ErrorLog()
        self.vrrp_errors = ErrorLog()
        self.cadence = Cadence(self.config.timing)

    async def poll(self) -> haproxy.Snapshot | None:
        """One HAProxy reading, retried briefly; None when HAProxy cannot be read."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(len(POLL_RETRY_DELAYS) + 1),
            wait=tenacity.wait_chain(*map(tenacity.wait_fixed, POLL_RETRY_DELAYS)),
            retry=tenacity.retry_if_exception_type(haproxy.HAProxyError),
            sleep=trio.sleep,
            reraise=True,
        )
        try:
            snapshot = await retrying(
                haproxy.query, self.config.haproxy_socket, timeout=self.config.haproxy_timeout
            )
        except haproxy.HAProxyError as exc:
            self.haproxy_errors.error(f"HAProxy stats unavailable, reporting no listeners: {exc}")
            return None
        self.haproxy_errors.ok("HAProxy stats readable again")
        return snapshot

    def read(self, snapshot: haproxy.Snapshot | None) -> Reading:
        """The reading's listeners and pools; keeps the counters epoch current."""
        if snapshot is not None:
            try:
                self.epoch = counters_epoch(
                    snapshot.info, now=time.time(), previous=self.epoch or None
                )
            except ReportError as exc:
                self.haproxy_errors.error(f"HAProxy stats unusable, reporting no listeners: {exc}")
                snapshot = None
        if snapshot is None:
            # HAProxy down or unreadable: say so with an empty heartbeat. The
            # manager marks the listeners missing, and the listener count no
            # longer matches, so the amphora is failed over after the timeout.
            return Reading()
        return Reading(*reports(snapshot.rows))

    def heartbeat(self, reading: Reading, seq: int) -> Heartbeat:
        return Heartbeat(
            amphora_id=self.config.amphora_id,
            seq=seq,
            sent_at_ms=int(time.time() * 1000),
            interval_ms=max(1, round(self.config.interval * 1000)),
            counters_epoch=self.epoch,
            listeners=reading.listeners,
            pools=reading.pools,
        )

    async def send(self, reading: Reading, why: Why = Why.FIRST) -> None:
        """Number, build, sign and send one heartbeat."""
        try:
            seq = await trio.to_thread.run_sync(self.sequence.next)
        except OSError as exc:
            # Sending a number that is not reserved could repeat after a
            # restart: send nothing rather than something replayable.
            self.send_errors.error(f"cannot store the sequence reservation: {exc}")
            return
        hb = self.heartbeat(reading, seq)
        try:
            datagram = encode_native(hb, self.config.key_id, self.config.key)
        except ValueError as exc:
            # schema/heartbeat.md 9.1: a heartbeat beyond the format's limits
            # (over 65 000 bytes, about 3 000 members) is not sent, not split
            # or trimmed (parts left out would look missing: ERROR/OFFLINE);
            # logged every time; the amphora ends up failed over.
            log.error("heartbeat seq=%d not sent: %s", seq, exc)
            return
        results = await self.sender.send(datagram)
        failed = [f"{dest}: {err}" for dest, err in results if err is not None]
        if failed:
            self.send_errors.error("heartbeat not sent to " + "; ".join(failed))
        else:
            self.send_errors.ok("heartbeats are going out again")
        if self.verbose:
            log.info(
                "heartbeat seq=%d (%s) listeners=%d pools=%d bytes=%d to %s",
                seq,
                why.value,
                len(hb.listeners),
                len(hb.pools),
                len(datagram),
                ", ".join(str(dest) for dest, _ in results),
            )

    async def beat(self) -> None:
        """Poll and send one heartbeat, whatever changed."""
        await self.send(self.read(await self.poll()))

    def vrrp_allows(self) -> bool:
        """False while a configured keepalived is not running (agent/vrrp.py)."""
        check = self.config.keepalived
        if check is None:
            return True
        problem = check.problem()
        if problem is None:
            self.vrrp_errors.ok("keepalived is running: heartbeats resume")
            return True
        self.vrrp_errors.error(f"{problem}: sending no heartbeats, so that the pair fails over")
        return False

    async def cycle(self, now: float) -> Why | None:
        """One poll at ``now`` (trio time); sends when the schedule says so, and says why."""
        if not self.vrrp_allows():
            self.cadence = self.cadence.paused(now)
            return None
        reading = self.read(await self.poll())
        why, self.cadence = self.cadence.decide(now, reading.summary)
        if why is not None:
            await self.send(reading, why)
            self.cadence = self.cadence.sent(now, reading.summary)
        return why

    async def run(self) -> None:
        while True:
            # Never a burst after a stall: the next wake counts from the last poll.
            await trio.sleep_until(self.cadence.next_wake())
            await self.cycle(trio.current_time())


async def run(config: AgentConfig, *, once: bool = False, verbose: bool = False) -> int:
    sequence = SequenceFile(config.state_dir, now_ms=int(time.time() * 1000))
    if sequence.warning:
        log.warning(sequence.warning)
    sender = UdpSender(config.destinations, config.send_to)
    agent = Agent(config, sequence, sender, verbose=verbose)
    log.info(
        "amphora-agent started: %d controller(s) (%s), HAProxy %s polled every %gs, "
        "heartbeats every %gs and at once on a change%s",
        len(config.destinations),
        config.send_to,
        config.haproxy_socket,
        config.timing.poll_every,
        config.interval,
        ""
        if config.keepalived is None
        else f", only while keepalived runs ({config.keepalived.pid_file})",
    )
    if once:
        if not agent.vrrp_allows():
            sender.close()
            return 1
        try:
            await agent.beat()
        finally:
            sender.close()
        return 0
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log.info("%s: stopping", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await agent.run()
    finally:
        sender.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s amphora-agent %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"amphora-agent: error: {exc}", file=sys.stderr)
        return 2
    return trio.run(functools.partial(run, config, once=args.once, verbose=args.verbose))


if __name__ == "__main__":
    sys.exit(main())

"""``healthmgr serve``: wires the parts together and owns their lifetimes.

Task tree (every task owned by a nursery):

    root
     ├─ failover runner (its own nursery of in-flight failovers)
     └─ main: receiver, writer, refresher, checker, metrics, watchdog, signals

SIGTERM/SIGINT cancel ``main`` (no more receiving, no new claims), give
in-flight failovers ``failover.shutdown_grace`` seconds, abandon the rest, then flush
what is pending and return. SIGHUP reloads keys and the live options.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
import trio

from healthmgr.config import Settings, diff_reloadable, load_settings
from healthmgr.db.store import open_store
from healthmgr.logging import RateLimitedLogger, set_level
from healthmgr.manager.checker import Checker, CheckerSettings
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.decoder import Decoder
from healthmgr.manager.failover import load_driver
from healthmgr.manager.fleet import Fleet
from healthmgr.manager.fleet_loader import FleetLoader
from healthmgr.manager.flush_process import ProcessFlush
from healthmgr.manager.heap import trim_heap
from healthmgr.manager.ingest import Ingest
from healthmgr.manager.metrics import Metrics, serve_metrics
from healthmgr.manager.monitor import CheckState, Monitor
from healthmgr.manager.quarantine import Quarantine
from healthmgr.manager.receiver import Receiver, bind_udp
from healthmgr.manager.refresher import Refresher
from healthmgr.manager.runner import FailoverRunner, RunnerSettings
from healthmgr.manager.verdict_log import VerdictLog
from healthmgr.manager.view import View
from healthmgr.manager.writer import Writer
from healthmgr.rules.detector import Detector, DetectorConfig, Threshold
from healthmgr.rules.impairment import Impairment
from healthmgr.wire.errors import Rejected

log = structlog.get_logger("healthmgr.service")

FINAL_FLUSH_ATTEMPTS = 3
REFRESH_MIN_INTERVAL = 5.0


def manager_id(settings: Settings) -> str:
    return settings.health_manager.effective_manager_id


def presence_interval(settings: Settings) -> float:
    """How often a manager writes its liveness: often enough for peers to see
    it gone well within a heartbeat_timeout."""
    return min(1.0, settings.health_manager.heartbeat_timeout / 4)


def loop_lag_after(settings: Settings) -> float:
    """An event loop waking later than this makes the manager impaired. A smaller
    lag goes unnoticed, so a verdict may come that much after its bound."""
    return max(0.5, settings.health_manager.heartbeat_interval / 2)


def db_stall_after(settings: Settings) -> float:
    """A database call running longer than this makes the manager impaired:
    before live amphorae could look stale because of it."""
    hm = settings.health_manager
    margin = (hm.heartbeat_timeout - hm.heartbeat_interval) / 2
    return max(4 * hm.flush_interval, min(margin, settings.database.timeout))


def detector_config(settings: Settings) -> DetectorConfig:
    hm = settings.health_manager
    threshold = hm.failover_threshold
    return DetectorConfig(
        heartbeat_timeout=hm.heartbeat_timeout,
        heartbeat_interval=hm.heartbeat_interval,
        threshold=Threshold.parse(None if threshold == "off" else threshold),
        settle=hm.failover_settle,
        rate_limit=hm.failover_rate_limit,
        observer_fresh=3 * presence_interval(settings),
        observer_timeout=hm.observer_timeout,
    )


def runner_settings(settings: Settings) -> RunnerSettings:
    hm, fo = settings.health_manager, settings.failover
    return RunnerSettings(
        manager_id(settings), hm.failover_threads, fo.max_attempts, fo.retry_backoff, fo.lease
    )


@dataclass
class Daemon:
    settings: Settings
    config_path: str | None = None
    metrics: Metrics | None = None  # None: the daemon's own, labelled with its manager id

    def __post_init__(self) -> None:
        hm = self.settings.health_manager
        mid = manager_id(self.settings)
        if self.metrics is None:
            self.metrics = Metrics(manager_id=mid)
        self.store = open_store(self.settings)
        self.engine = self.store.engine
        self.flush_process = (
            ProcessFlush(self.settings, self.store.schema) if hm.writer == "process" else None
        )
        self.db = DbCalls()
        self.quarantine = Quarantine(self.metrics)
        self.verdicts = VerdictLog()
        self.fleet = Fleet()
        self.decoder = Decoder.from_settings(self.settings, self.fleet)
        self.fleet_loader = FleetLoader(
            self.store.load_fleet, self.fleet, interval=hm.fleet_refresh_interval
        )
        self.view = View(
            ttl=hm.topology_ttl,
            refresh_min_interval=REFRESH_MIN_INTERVAL,
            late_after=hm.heartbeat_interval,
            health_resolution=hm.health_update_resolution,
            stats_every=hm.stats_update_every,
        )
        self.rejected_log = RateLimitedLogger(self.settings.logging.rejected_log_interval)
        self.ingest = Ingest(
            self.decoder.decode, self.view, self.metrics, self._on_reject, self.verdicts
        )
        self.decoder.on_restart = self.ingest.octavia_restart
        self.refresher = Refresher(self.store, self.ingest, self.metrics, self.quarantine)
        self.writer = Writer(
            self.view,
            self.flush_process.flush if self.flush_process else self.store.flush,
            self.metrics,
            interval=hm.flush_interval,
            quarantine=self.quarantine,
            db=self.db,
        )
        self.checks = CheckState()
        self.detector = Detector(detector_config(self.settings))
        self.runner = FailoverRunner(
            self.store,
            load_driver(self.settings.failover.driver, self.settings),
            self.metrics,
            runner_settings(self.settings),
            self.db,
        )
        self.sock: socket.socket | None = None
        self.early_signals: list[int] = []

    def _judgment(self, receiver: Receiver) -> tuple[Impairment, Checker, Monitor]:
        """Built when the run starts: their clocks are trio's."""
        hm = self.settings.health_manager
        assert self.metrics is not None and self.sock is not None
        impairment = Impairment(
            db_stall_after=db_stall_after(self.settings),
            lag_after=loop_lag_after(self.settings),
            started_at=trio.current_time(),
        )
        checker = Checker(
            store=self.store,
            runner=self.runner,
            detector=self.detector,
            impairment=impairment,
            checks=self.checks,
            db=self.db,
            metrics=self.metrics,
            verdicts=self.verdicts,
            cfg=CheckerSettings(
                manager_id(self.settings),
                hm.heartbeat_timeout,
                hm.health_check_interval,
                self.settings.failover.lease,
            ),
        )
        monitor = Monitor(
            manager_id=manager_id(self.settings),
            store=self.store,
            db=self.db,
            impairment=impairment,
            writer=self.writer.state,
            checks=self.checks,
            kernel_drops=receiver.kernel_drops,
            metrics=self.metrics,
            presence_interval=presence_interval(self.settings),
        )
        return impairment, checker, monitor

    def _on_reject(self, addr: object, exc: Rejected) -> None:
        self.rejected_log.rejected(exc.reason, addr, exc.detail)  # the StrEnum: no .value

    def _after_burst(self, datagrams: int, started: float) -> None:
        assert self.metrics is not None
        self.metrics.count_datagrams(datagrams)
        self.metrics.observe_processing_lag(time.monotonic() - started)
        self.ingest.publish()
        self.refresher.poke()

    def bind(self) -> socket.socket:
        hm = self.settings.health_manager
        self.sock = bind_udp(
            hm.bind_ip, hm.bind_port, rcvbuf=hm.sock_rlimit or None, reuse_port=hm.reuse_port
        )
        got = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux doubles it
        if hm.sock_rlimit and got < hm.sock_rlimit:
            log.warning(
                "UDP receive buffer smaller than sock_rlimit: raise net.core.rmem_max",
                sock_rlimit=hm.sock_rlimit,
                effective=got,
            )
        return self.sock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = self.sock or self.bind()
        # One signal receiver for the whole run: a signal that arrives while
        # shutting down is absorbed (nobody reads it), never fatal to the flush.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            try:
                if self.flush_process:
                    await trio.to_thread.run_sync(self.flush_process.start)
                await self._serve(sock, sigs, task_status)
                await self._final_flush()
            finally:
                sock.close()
                if self.flush_process:
                    await trio.to_thread.run_sync(self.flush_process.close)
                self.engine.dispose()
        log.info("healthmgr stopped")

    async def _serve(
        self, sock: socket.socket, sigs: AsyncIterator[int], task_status: trio.TaskStatus[None]
    ) -> None:
        assert self.metrics is not None
        receiver = Receiver(sock, self.ingest.datagram, self._after_burst)
        self.metrics.watch_kernel_drops(receiver.kernel_drops)
        notifier = _Notifier()
        _, checker, monitor = self._judgment(receiver)
        async with trio.open_nursery() as root:
            await root.start(self.runner.run)
            async with trio.open_nursery() as main:
                if self.settings.metrics.bind:  # first: a port in use fails before anything runs
                    await main.start(serve_metrics, self.settings.metrics.bind, self.metrics)
                await main.start(monitor.run)
                await main.start(self.writer.run)
                await main.start(self.fleet_loader.run)
                await main.start(self.refresher.run)
                await main.start(checker.run)
                await main.start(receiver.run)
                main.start_soon(notifier.watchdog)
                main.start_soon(self._housekeeping)
                main.start_soon(trim_heap)
                notifier.ready()
                log.info(
                    "healthmgr serving",
                    bind=f"{self.settings.health_manager.bind_ip}:{sock.getsockname()[1]}",
                    manager_id=manager_id(self.settings),
                    octavia_compat=self.settings.health_manager.octavia_compat,
                    schema=self.store.schema,
                )
                task_status.started(sock.getsockname()[1])
                await self._signals(sigs, main.cancel_scope)
            notifier.stopping()
            await self._drain_failovers()
            root.cancel_scope.cancel()
        await monitor.stopped()

    def catch_signals_outside_trio(self) -> None:
        """Before and after trio's own receiver, SIGTERM/SIGINT are only noted:
        one during start-up stops the daemon as soon as it runs, one during the
        last moments of shutdown cannot kill it before it exits 0."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda s, _f: self.early_signals.append(s))

    async def _signals(self, sigs: AsyncIterator[int], main_scope: trio.CancelScope) -> None:
        if self.early_signals:
            log.info("shutting down", signal=signal.Signals(self.early_signals[0]).name)
            main_scope.cancel()
            return
        async for signum in sigs:
            if signum == signal.SIGHUP:
                self.reload()
                continue
            log.info("shutting down", signal=signal.Signals(signum).name)
            main_scope.cancel()
            return

    async def _drain_failovers(self) -> None:
        if self.runner.in_flight:
            log.info("waiting for in-flight failovers", count=self.runner.in_flight)
        with trio.move_on_after(self.settings.failover.shutdown_grace):
            await self.runner.wait_idle()

    async def _final_flush(self) -> None:
        for _ in range(FINAL_FLUSH_ATTEMPTS):
            if await self.writer.flush_once():
                return
            await trio.sleep(0.5)
        log.error(
            "pending writes lost at shutdown: database unreachable", pending=len(self.view.pending)
        )

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply keys and the options that can change live."""
        try:
            new = load_settings(self.config_path)
            live, restart = diff_reloadable(self.settings, new)
            applied = _keep_restart_only(self.settings, new, restart)
            driver = None
            if applied.failover != self.settings.failover:
                # Built from the applied settings: a changed database URL waits for a restart.
                driver = load_driver(applied.failover.driver, applied)
        except Exception as exc:
            log.error("reload failed; keeping the running configuration", error=str(exc))
            return
        if restart:
            log.warning("options changed that need a restart; not applied", options=sorted(restart))
        self.decoder.update(new)
        hm = new.health_manager
        self.detector.config = detector_config(new)
        self.runner.cfg = runner_settings(new)
        if driver is not None:
            self.runner.replace_driver(driver)
        self.view.late_after = hm.heartbeat_interval
        self.view.health_resolution_ms = int(hm.health_update_resolution * 1000)
        self.view.stats_every = hm.stats_update_every
        self.rejected_log.interval = new.logging.rejected_log_interval
        set_level(new.logging.level)
        self.settings = applied
        log.info(
            "configuration reloaded",
            changed=sorted(live),
            master_keys=len(new.keys.master_keys),
            failover_driver="kept" if driver is None else "replaced",
        )

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(1.0)
            self.rejected_log.flush()
            self.quarantine.flush()
            self.verdicts.flush()


def _keep_restart_only(old: Settings, new: Settings, restart: frozenset[str]) -> Settings:
    """``new``, except options that need a restart keep their running values."""
    if not restart:
        return new
    sections = {}
    for dotted in restart:
        section, _, option = dotted.partition(".")
        sections.setdefault(section, {})[option] = getattr(getattr(old, section), option)
    updates = {
        name: getattr(new, name).model_copy(update=values) for name, values in sections.items()
    }
    return new.model_copy(update=updates)


class _Notifier:
    """sd_notify READY/WATCHDOG/STOPPING when run under systemd; silent otherwise."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() else None
        if self.enabled:
            import sdnotify

            self._n = sdnotify.SystemdNotifier()

    def _send(self, message: str) -> None:
        if self.enabled:
            self._n.notify(message)

    def ready(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    async def watchdog(self) -> None:
        if not self.enabled or self.watchdog_interval is None:
            return
        while True:
            self._send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)

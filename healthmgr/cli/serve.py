"""``healthmgr serve``: run the health manager daemon."""

from __future__ import annotations

import argparse
import signal

from healthmgr.cli.base import Command, add_config_option
from healthmgr.cli.errors import CliError, Exit


class Serve(Command):
    """Run the health manager daemon until SIGTERM or SIGINT (exit 0); SIGHUP reloads.

    Start-up errors are one line on stderr with the statuses of docs/cli.md: a bad
    configuration 3, an unreachable database 4, a schema not at head 5, a port in use 1.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_config_option(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from healthmgr.manager.gc_policy import collect_less_often

        # The daemon's collector thresholds (healthmgr.manager.gc_policy: CPU and stalls)
        # from here on: the imports below create some 100,000 long-lived objects, on which
        # CPython's defaults ran young collections that freed nothing (0.085 CPU-s of
        # each start, 12 interleaved pairs).
        collect_less_often()
        import trio

        from healthmgr.config import ConfigError, load_settings
        from healthmgr.db.migrate import check_current
        from healthmgr.logging import configure_logging
        from healthmgr.manager.metrics import MetricsBindError
        from healthmgr.manager.service import Daemon

        try:
            settings = load_settings(parsed_args.config)
        except ConfigError as exc:
            raise CliError(
                f"{exc} (run `healthmgr config check` for details)", Exit.CONFIG
            ) from None
        configure_logging(settings.logging.level, settings.logging.format)
        daemon = Daemon(settings, config_path=parsed_args.config)
        daemon.catch_signals_outside_trio()
        check_current(daemon.engine, daemon.store.schema)
        try:
            daemon.bind()
        except OSError as exc:
            hm = settings.health_manager
            raise CliError(
                f"cannot bind {hm.bind_ip}:{hm.bind_port}: {exc.strerror or exc}"
            ) from None
        try:
            trio.run(daemon.run)
        except (MetricsBindError, BaseExceptionGroup) as exc:
            raise CliError(_bind_error(exc)) from None
        # Everything is flushed. CPython puts Python-level handlers back to the
        # default while it finalizes, so a late SIGTERM would still end this exit
        # with -15; ignoring is kept through finalization.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        return 0


def _bind_error(exc: BaseException) -> str:
    """The message of a MetricsBindError, alone or in trio's exception groups; else re-raise."""
    from healthmgr.manager.metrics import MetricsBindError

    if isinstance(exc, MetricsBindError):
        return str(exc)
    assert isinstance(exc, BaseExceptionGroup)
    found, rest = exc.split(MetricsBindError)
    if found is None or rest is not None:
        raise exc
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return str(found)

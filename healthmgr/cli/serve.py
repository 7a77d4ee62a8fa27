"""``healthmgr serve``: run the health manager daemon."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the health manager daemon")
    p.add_argument("--config", metavar="PATH", help="TOML config file (default: "
                   "$HEALTHMGR_CONFIG or /etc/healthmgr/healthmgr.toml)")
    p.set_defaults(func=run)


def _fail(message: str, status: int = 1) -> int:
    print(f"healthmgr: error: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    from healthmgr.config import ConfigError, load_settings
    from healthmgr.db.engine import DatabaseError
    from healthmgr.db.migrate import check_current
    from healthmgr.logging import configure_logging
    from healthmgr.manager.service import Daemon

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(f"{exc} (run `healthmgr config check` for details)", 2)
    configure_logging(settings.logging.level, settings.logging.format)
    # The schema check goes through Alembic, whose INFO chatter ("Context impl
    # SQLiteImpl.") is noise in the daemon's log and before a one-line error.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        daemon = Daemon(settings, config_path=args.config)
        daemon.catch_signals_outside_trio()
        check_current(daemon.engine)
        daemon.bind()
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except DatabaseError as exc:
        return _fail(str(exc))
    except OSError as exc:
        hm = settings.health_manager
        return _fail(f"cannot bind {hm.bind_ip}:{hm.bind_port}: {exc.strerror or exc}")
    trio.run(daemon.run)
    # Everything is flushed. CPython puts Python-level handlers back to the
    # default while it finalizes, so a late SIGTERM would still end this exit
    # with -15; ignoring is kept through finalization.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    return 0

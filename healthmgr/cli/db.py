"""`healthmgr db`: schema migrations and the DDL contract.

    healthmgr db upgrade [--revision REV]   migrate the database to REV (head)
    healthmgr db current [--check]          print the database's revision
    healthmgr db stamp REV                  record REV without migrating
    healthmgr db ddl --dialect D            print CREATE statements of the models

The database is ``--db-url URL`` if given, else ``[database] connection`` of
the configuration (``--config PATH``, ``$HEALTHMGR_CONFIG`` or the default
path, with environment overrides).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from healthmgr.cli.main import UsageError

DIALECT_ALIASES = {"mariadb": "mysql", "postgres": "postgresql"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="database schema: upgrade, current, stamp, ddl")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--db-url",
        metavar="URL",
        help="database URL (default: [database] connection of the configuration)",
    )
    where.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $HEALTHMGR_CONFIG or /etc/healthmgr/healthmgr.toml)",
    )

    upgrade = commands.add_parser(
        "upgrade", parents=[where], help="upgrade the database schema (a no-op when current)"
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(func=cmd_upgrade)

    current = commands.add_parser(
        "current", parents=[where], help="print the revision the database is at"
    )
    current.add_argument(
        "--check", action="store_true", help="exit 1 unless the schema is at this release's head"
    )
    current.set_defaults(func=cmd_current)

    stamp = commands.add_parser(
        "stamp",
        parents=[where],
        help="record a revision without migrating (a schema created from schema/*.sql)",
    )
    stamp.add_argument("revision", help="revision to record, e.g. head")
    stamp.set_defaults(func=cmd_stamp)

    ddl = commands.add_parser("ddl", help="print the CREATE statements of the models")
    ddl.add_argument(
        "--dialect", required=True, metavar="D", help="sqlite, postgresql or mysql (MariaDB)"
    )
    ddl.set_defaults(func=cmd_ddl)


def _database_url(args: argparse.Namespace) -> tuple[str, str]:
    """(URL, where it came from), validated; bad values are usage errors naming the source."""
    from healthmgr.db.engine import BadDatabaseURL, normalize_url

    if args.db_url is not None:
        url, origin = args.db_url, "--db-url"
    else:
        from healthmgr.config import load_settings

        url, origin = load_settings(args.config).database.connection, "[database] connection"
    try:
        normalize_url(url)
    except BadDatabaseURL as exc:
        raise UsageError(f"{origin}: {exc}") from None
    return url, origin


def _run(args: argparse.Namespace, action: Callable[[str], int]) -> int:
    """Run ``action(url)``; configuration and database errors are one line, exit 1."""
    from healthmgr.config import ConfigError
    from healthmgr.db.engine import DatabaseError

    try:
        url, _origin = _database_url(args)
        return int(action(url) or 0)
    except (ConfigError, DatabaseError) as exc:
        print(f"healthmgr: error: {exc}", file=sys.stderr)
        return 1


def cmd_upgrade(args: argparse.Namespace) -> int:
    from healthmgr.db import migrate
    from healthmgr.db.engine import describe

    def action(url: str) -> int:
        before, after = migrate.upgrade(url, args.revision)
        where = describe(url)
        if before == after:
            print(f"database schema is at {_name(after)} already, nothing to do ({where})")
        else:
            print(f"database schema upgraded from {_name(before)} to {_name(after)} ({where})")
        return 0

    return _run(args, action)


def cmd_current(args: argparse.Namespace) -> int:
    from healthmgr.db import migrate

    def action(url: str) -> int:
        rev = migrate.current(url)
        print(f"{_name(rev)} ({_position(rev)})")
        if args.check:
            migrate.check_current(url)
        return 0

    return _run(args, action)


def cmd_stamp(args: argparse.Namespace) -> int:
    from healthmgr.db import migrate

    def action(url: str) -> int:
        before, after = migrate.stamp(url, args.revision)
        print(f"database schema revision recorded: {_name(after)} (was {_name(before)})")
        return 0

    return _run(args, action)


def cmd_ddl(args: argparse.Namespace) -> int:
    from healthmgr.db import migrate

    dialect = DIALECT_ALIASES.get(args.dialect.lower(), args.dialect.lower())
    if dialect not in migrate.DDL_DIALECTS:
        choices = ", ".join(migrate.DDL_DIALECTS)
        raise UsageError(f"--dialect: unknown dialect {args.dialect!r} (choose from {choices})")
    sys.stdout.write(migrate.ddl(dialect))
    return 0


def _name(rev: str | None) -> str:
    return rev if rev is not None else "none"


def _position(rev: str | None) -> str:
    from healthmgr.db import migrate

    head = migrate.head()
    if rev == head:
        return "head"
    if rev is None:
        return f"no schema revision recorded; head is {head}"
    if rev in migrate.revisions():
        return f"behind head {head}: run `healthmgr db upgrade`"
    return f"unknown to this healthmgr; its head is {head}"

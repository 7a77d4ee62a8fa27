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

from healthmgr.cli.base import Command, Context, ShowOne, add_database_options, hint_location
from healthmgr.cli.errors import UsageError, keep_location

DIALECT_ALIASES = {"mariadb": "mysql", "postgres": "postgresql"}
CHANGE_FIELDS = ("database", "before", "after", "changed")


class Upgrade(ShowOne):
    """Upgrade the database schema (a no-op when it is at head already)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument("--revision", default="head", help="target revision (default: head)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        from healthmgr.db import migrate

        with Context(parsed_args) as ctx:
            engine = ctx.engine(check_schema=False)
            schema = ctx.schema()
            before, after = migrate.upgrade(engine, parsed_args.revision, schema)
            where = _where(ctx, schema)
        if before == after:
            self.say(f"database schema is at {_name(after)} already, nothing to do ({where})")
        else:
            self.say(f"database schema upgraded from {_name(before)} to {_name(after)} ({where})")
        return CHANGE_FIELDS, (where, before, after, before != after)


class Current(ShowOne):
    """Print the revision the database is at, and where that is against this release's head."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit 5 unless the schema is at this release's head (see docs/cli.md)",
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        from healthmgr.db import migrate

        with Context(parsed_args) as ctx:
            engine = ctx.engine(check_schema=False)
            schema = ctx.schema()
            rev = migrate.current(engine)
            if parsed_args.check:
                migrate.check_current(engine, schema)
            where = _where(ctx, schema)
        return ("revision", "head", "position", "database"), (
            rev,
            migrate.head(schema),
            keep_location(position(rev, schema), *hint_location(parsed_args)),
            where,
        )


class Stamp(ShowOne):
    """Record a revision without migrating (a schema created from schema/*.sql)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument("revision", help="revision to record, e.g. head")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        from healthmgr.db import migrate

        with Context(parsed_args) as ctx:
            engine = ctx.engine(check_schema=False)
            schema = ctx.schema()
            before, after = migrate.stamp(engine, parsed_args.revision, schema)
            where = _where(ctx, schema)
        self.say(f"database schema revision recorded: {_name(after)} (was {_name(before)})")
        return CHANGE_FIELDS, (where, before, after, before != after)


class Ddl(Command):
    """Print the CREATE statements of the models (the DDL of schema/<dialect>.sql)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--dialect", required=True, metavar="D", help="sqlite, postgresql or mysql (MariaDB)"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from healthmgr.db import migrate

        dialect = DIALECT_ALIASES.get(parsed_args.dialect.lower(), parsed_args.dialect.lower())
        if dialect not in migrate.DDL_DIALECTS:
            choices = ", ".join(migrate.DDL_DIALECTS)
            raise UsageError(
                f"--dialect: unknown dialect {parsed_args.dialect!r} (choose from {choices})"
            )
        self.app.stdout.write(migrate.ddl(dialect))
        return 0


def _where(ctx: Context, schema: str = "healthmgr") -> str:
    from healthmgr.db.engine import describe

    where = describe(ctx.url())
    # Octavia's database: healthmgr's own tables beside Octavia's, said so.
    return f"{where}, beside Octavia's schema" if schema == "octavia" else where


def _name(rev: str | None) -> str:
    return rev if rev is not None else "none"


def position(rev: str | None, schema: str = "healthmgr") -> str:
    """Where ``rev`` stands against this release's head, in words."""
    from healthmgr.db import migrate

    head = migrate.head(schema)
    if rev == head:
        return "head"
    if rev is None:
        return f"no schema revision recorded; head is {head}: {migrate.UPGRADE_HINT}"
    if rev in migrate.revisions(schema):
        return f"behind head {head}: {migrate.UPGRADE_HINT}"
    return f"unknown to this healthmgr; its head is {head}"

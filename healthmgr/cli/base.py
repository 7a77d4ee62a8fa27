"""What every ``healthmgr`` command shares: one-line errors, the configuration, the database.

Commands derive from :class:`Command`, :class:`Lister` or :class:`ShowOne`
(cliff's, with the error handling of :class:`Guarded`). Those that read the
configuration or the database add :func:`add_config_option` /
:func:`add_database_options` to their parser and use :class:`Context`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from cliff import columns, command, lister, show

from healthmgr.cli.errors import CliError, Exit, UsageError, classify, keep_location

if TYPE_CHECKING:
    import sqlalchemy as sa

    from healthmgr.config import Settings

T = TypeVar("T")
CONFIG_HELP = "configuration file (default: $HEALTHMGR_CONFIG, else /etc/healthmgr/healthmgr.toml)"


class Guarded:
    """Turns a known error into one line on stderr and its exit status (errors.Exit).

    ``--debug`` (a global option) shows the traceback instead.
    """

    app: Any

    def run(self, parsed_args: argparse.Namespace) -> int:
        try:
            return int(super().run(parsed_args) or 0)  # type: ignore[misc]
        except BrokenPipeError:
            raise  # `| head`: cliff exits quietly
        except Exception as exc:
            if getattr(self.app.options, "debug", False):
                raise
            error = classify(exc)
            if error is None:
                error = CliError(f"{type(exc).__name__}: {exc}", Exit.FAILED)
            if str(error):
                message = keep_location(str(error), *hint_location(parsed_args))
                name = getattr(self.app, "NAME", "healthmgr")
                self.app.stderr.write(f"{name}: error: {message}\n")
            return int(error.code)

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)  # type: ignore[misc]

        def error(message: str) -> NoReturn:
            # One line, not argparse's usage block: the usage is in --help.
            self.app.stderr.write(f"{parser.prog}: error: {message} (see --help)\n")
            raise SystemExit(int(Exit.USAGE))

        parser.error = error  # type: ignore[method-assign]
        return parser

    def _generate_columns_and_selector(self, parsed_args: argparse.Namespace, column_names: Any):
        try:
            return super()._generate_columns_and_selector(parsed_args, column_names)  # type: ignore[misc]
        except ValueError as exc:  # an unknown -c COLUMN
            raise UsageError(f"-c: {exc}") from None

    def say(self, line: str) -> None:
        """A confirmation line: on stderr, so stdout stays what -f asks for; -q silences it."""
        if getattr(self.app.options, "verbose_level", 1) > 0:
            self.app.stderr.write(line + "\n")


class Command(Guarded, command.Command):
    pass


class Lister(Guarded, lister.Lister):
    pass


class ShowOne(Guarded, show.ShowOne):
    pass


class ShowOneById(ShowOne):
    """A command on one object of the database, named by a positional argument."""

    id_dest: str  # e.g. "amphora": parsed_args.amphora
    id_metavar: str  # e.g. "AMPHORA_ID"
    id_help: str

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument(self.id_dest, metavar=self.id_metavar, help=self.id_help)
        return parser


def hint_location(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ``--config`` and ``--db-url`` arguments that hints must keep."""
    config = ["--config", shlex.quote(str(args.config))] if getattr(args, "config", None) else []
    db = []
    if getattr(args, "db_url", None):
        from sqlalchemy.engine import make_url

        try:
            shown = make_url(args.db_url).render_as_string(hide_password=True)
        except Exception:
            shown = "URL"
        db = ["--db-url", shlex.quote(shown)]
    return config, db


# -- options ----------------------------------------------------------------------------


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help=CONFIG_HELP)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument(
        "--db-url",
        metavar="URL",
        help="database URL (default: [database] connection of the configuration)",
    )
    parser.add_argument(
        "--schema",
        choices=("healthmgr", "octavia", "auto"),
        help="whose schema the database has (default: [database] schema of the "
        "configuration; octavia: a database Octavia's migrations created)",
    )


def status_choices(kind: str) -> Callable[[str], str]:
    """An argparse type: a status of ``kind`` ("operating", "provisioning", "amphora",
    "failover"), any case, checked against Octavia's vocabulary."""
    from healthmgr.rules import constants as C

    vocabulary = {
        "operating": C.OPERATING_STATUSES,
        "provisioning": C.PROVISIONING_STATUSES,
        "amphora": C.AMPHORA_STATUSES,
        "failover": C.FAILOVER_STATES,
    }[kind]

    def parse(text: str) -> str:
        value = text.strip().upper()
        if value not in vocabulary:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a valid {kind} status (choose from {', '.join(vocabulary)})"
            )
        return value

    parse.__name__ = f"{kind} status"
    return parse


def add_status_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operating-status",
        type=status_choices("operating"),
        action="append",
        default=[],
        metavar="STATUS",
        help="only objects with this operating status (repeatable)",
    )
    parser.add_argument(
        "--provisioning-status",
        type=status_choices("provisioning"),
        action="append",
        default=[],
        metavar="STATUS",
        help="only objects with this provisioning status (repeatable; default: all but DELETED)",
    )


# -- configuration and database ----------------------------------------------------------


class Context:
    """The configuration and the database of one command run, loaded when first used."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._settings: Settings | None = None
        self._engine: sa.Engine | None = None
        self._schema: str | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from healthmgr.config import load_settings

            self._settings = load_settings(getattr(self.args, "config", None))
        return self._settings

    def url(self) -> str:
        from healthmgr.db.engine import BadDatabaseURL, normalize_url

        given = getattr(self.args, "db_url", None)
        if given is None:
            return self.settings.database.connection
        try:
            normalize_url(given)
        except BadDatabaseURL as exc:
            raise UsageError(f"--db-url: {exc}") from None
        return str(given)

    def engine(self, *, check_schema: bool = True) -> sa.Engine:
        """The database, reachable and (``check_schema``) at this release's schema head."""
        if self._engine is None:
            from healthmgr.db.engine import make_engine

            self._engine = make_engine(self.url())
            if check_schema:
                from healthmgr.db.migrate import check_current

                check_current(self._engine, self.schema())
        return self._engine

    def schema(self) -> str:
        """``healthmgr`` or ``octavia``: --schema, else the configuration's, "auto" resolved."""
        if self._schema is None:
            from healthmgr.db.migrate import resolve_schema

            given = getattr(self.args, "schema", None)
            configured = given or self.settings.database.schema
            self._schema = resolve_schema(self.engine(check_schema=False), configured)
        return self._schema

    def read(self, work: Callable[[sa.Connection], T]) -> T:
        """``work(conn)`` in one read transaction."""
        from healthmgr.db.engine import connect

        with connect(self.engine()) as conn, conn.begin():
            return work(conn)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# -- values for the formatters -----------------------------------------------------------


class ListColumn(columns.FormattableColumn[list[Any]]):
    """A list: one item per line in a table, a list in JSON and YAML."""

    def human_readable(self) -> str:
        return "\n".join(str(v) for v in self._value or [])

    def machine_readable(self) -> list[Any]:
        return list(self._value or [])


def plain(value: Any) -> Any:
    """A value every formatter can print: times as ISO 8601 UTC strings, lists as ListColumn."""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list | tuple):
        return ListColumn([plain(v) for v in value])
    return value


def row_values(row: dict[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(plain(row.get(name)) for name in names)


def table(rows: Iterable[dict[str, Any]], names: Sequence[str]) -> tuple[tuple[str, ...], list]:
    """(columns, rows) for a Lister."""
    return tuple(names), [row_values(row, names) for row in rows]


def one(row: dict[str, Any], names: Sequence[str] | None = None) -> tuple[tuple[str, ...], tuple]:
    """(fields, values) for a ShowOne."""
    names = tuple(names or row.keys())
    return names, row_values(row, names)

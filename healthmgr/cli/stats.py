"""`healthmgr stats show LB|LISTENER`: listener statistics summed over amphorae."""

from __future__ import annotations

import argparse
from typing import Any

from healthmgr.cli.base import Context, ShowOne, add_database_options
from healthmgr.cli.errors import NotFound
from healthmgr.db import queries as Q


class StatsShow(ShowOne):
    """Show the statistics of a load balancer (all its listeners) or of one listener.

    The counters of every amphora are summed, as Octavia's `loadbalancer stats show`
    and `listener stats show` do: active_connections, bytes_in, bytes_out,
    request_errors, total_connections.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument(
            "ref", metavar="LB|LISTENER", help="a load balancer's or a listener's id or name"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            totals = ctx.read(lambda c: Q.sum_statistics(c, _listeners(c, parsed_args.ref)))
        return Q.STATS_COLUMNS, tuple(totals[name] for name in Q.STATS_COLUMNS)


def _listeners(conn: Any, ref: str) -> list[str]:
    """The listener ids ``ref`` stands for: a load balancer's, or one listener."""
    found = []
    for kind in (Q.LOAD_BALANCER, Q.LISTENER):
        try:
            found.append((kind, Q.resolve(conn, kind, ref)))
        except Q.NoSuchObject:
            continue
    if not found:
        raise NotFound(f"no load balancer or listener with id or name {ref!r}")
    if len(found) > 1:
        raise NotFound(
            f"{ref!r} names a load balancer ({found[0][1]['id']}) and a listener "
            f"({found[1][1]['id']}): give the id"
        )
    kind, row = found[0]
    return Q.listener_ids_of(conn, row["id"]) if kind is Q.LOAD_BALANCER else [row["id"]]

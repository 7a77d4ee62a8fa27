"""`healthmgr status show LB`: the status tree, drawn or as Octavia's StatusRootResponse."""

from __future__ import annotations

import argparse
from typing import Any

from healthmgr.cli.base import Context, ShowOne, add_database_options
from healthmgr.cli.formats import StatusTree
from healthmgr.db import queries as Q


class StatusShow(ShowOne):
    """Show the status tree of a load balancer: listeners, pools, health monitors, members.

    -f table (the default) draws the tree with each object's provisioning and operating
    status; -f json gives exactly the {"statuses": {"loadbalancer": ...}} of Octavia's
    `openstack loadbalancer status show`.
    """

    @property
    def formatter_namespace(self) -> str:
        return "healthmgr.formatter.status"

    @property
    def formatter_default(self) -> str:
        return "table"

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument("ref", metavar="LB", help="the load balancer's id or name")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        def work(conn: Any) -> StatusTree:
            lb = Q.resolve(conn, Q.LOAD_BALANCER, parsed_args.ref)
            return StatusTree(Q.status_tree(conn, lb), Q.tree_extras(conn, lb))

        with Context(parsed_args) as ctx:
            return ("statuses",), (ctx.read(work),)

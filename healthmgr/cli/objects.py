"""`healthmgr loadbalancer|listener|pool|member list|show`: the API's objects, from the database.

Objects are named by id or by name (a name several objects share is refused:
give the id). Columns are the database's column names.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from healthmgr.cli.base import (
    Context,
    Lister,
    ShowOne,
    add_database_options,
    add_status_filters,
    one,
    table,
)
from healthmgr.db import queries as Q


def _lb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loadbalancer", metavar="LB", help="only those of this load balancer")


def _lb_id(conn: Any, ref: str | None) -> str | None:
    return None if ref is None else Q.resolve(conn, Q.LOAD_BALANCER, ref)["id"]


def _statuses(args: argparse.Namespace) -> dict[str, list[str]]:
    return {"operating": args.operating_status, "provisioning": args.provisioning_status}


class _ListBase(Lister):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        add_status_filters(parser)
        return parser


class _ShowBase(ShowOne):
    kind: Q.Kind

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        label = self.kind.label.upper().replace(" ", "_")
        parser.add_argument("ref", metavar=label, help=f"the {self.kind.label}'s id or name")
        return parser


class LoadBalancerList(_ListBase):
    """List load balancers."""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        with Context(parsed_args) as ctx:
            rows = ctx.read(lambda c: Q.list_load_balancers(c, **_statuses(parsed_args)))
        return table(rows, Q.LB_COLUMNS)


class LoadBalancerShow(_ShowBase):
    """Show a load balancer, with its listeners, pools and amphorae."""

    kind = Q.LOAD_BALANCER

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            row = ctx.read(
                lambda c: Q.load_balancer_details(c, Q.resolve(c, self.kind, parsed_args.ref))
            )
        return one(row)


class _ListOfLoadBalancer(_ListBase):
    """A list that ``--loadbalancer LB`` narrows to one load balancer's objects."""

    query: Callable[..., list[dict[str, Any]]]  # Q.list_listeners, Q.list_pools
    columns: tuple[str, ...]

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        _lb_option(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        def work(conn: Any) -> list[dict[str, Any]]:
            lb = _lb_id(conn, parsed_args.loadbalancer)
            return self.query(conn, load_balancer=lb, **_statuses(parsed_args))

        with Context(parsed_args) as ctx:
            return table(ctx.read(work), self.columns)


class ListenerList(_ListOfLoadBalancer):
    """List listeners, of one load balancer or all."""

    query = staticmethod(Q.list_listeners)
    columns = Q.LISTENER_COLUMNS


class ListenerShow(_ShowBase):
    """Show a listener."""

    kind = Q.LISTENER

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            return one(ctx.read(lambda c: Q.resolve(c, self.kind, parsed_args.ref)))


class PoolList(_ListOfLoadBalancer):
    """List pools, of one load balancer or all."""

    query = staticmethod(Q.list_pools)
    columns = Q.POOL_COLUMNS


class PoolShow(_ShowBase):
    """Show a pool, with its listeners, members and health monitor."""

    kind = Q.POOL

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            row = ctx.read(lambda c: Q.pool_details(c, Q.resolve(c, self.kind, parsed_args.ref)))
        return one(row)


class MemberList(_ListBase):
    """List members, of one pool, of one load balancer, or all."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--pool", metavar="POOL", help="only the members of this pool")
        _lb_option(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        def work(conn: Any) -> list[dict[str, Any]]:
            lb = _lb_id(conn, parsed_args.loadbalancer)
            pool = None
            if parsed_args.pool is not None:
                pool = Q.resolve(conn, Q.POOL, parsed_args.pool)["id"]
            return Q.list_members(conn, pool=pool, load_balancer=lb, **_statuses(parsed_args))

        with Context(parsed_args) as ctx:
            return table(ctx.read(work), Q.MEMBER_COLUMNS)


class MemberShow(_ShowBase):
    """Show a member (--pool tells members of the same name in different pools apart)."""

    kind = Q.MEMBER

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--pool", metavar="POOL", help="the pool the member is in")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        def work(conn: Any) -> dict[str, Any]:
            where = []
            if parsed_args.pool is not None:
                pool = Q.resolve(conn, Q.POOL, parsed_args.pool)
                where.append(Q.MEMBER.table.c.pool_id == pool["id"])
            return Q.resolve(conn, self.kind, parsed_args.ref, where)

        with Context(parsed_args) as ctx:
            return one(ctx.read(work))

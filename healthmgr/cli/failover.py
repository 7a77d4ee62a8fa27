"""`healthmgr failover list|show|retry`: the failover requests and what became of them."""

from __future__ import annotations

import argparse
from typing import Any

from healthmgr.cli.base import (
    Context,
    Lister,
    ShowOneById,
    add_database_options,
    one,
    status_choices,
    table,
)
from healthmgr.cli.errors import UsageError
from healthmgr.db import admin
from healthmgr.db import queries as Q

SHOW_FIELDS = (*Q.FAILOVER_COLUMNS, "last_error")


def request_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(
            f"REQUEST_ID: {text!r} is not a failover request id (an integer)"
        ) from None
    if value < 1:
        raise UsageError(f"REQUEST_ID: {text!r} is not a failover request id (an integer)")
    return value


class _OnRequest(ShowOneById):
    """One failover request, named by REQUEST_ID."""

    id_dest, id_metavar, id_help = "request", "REQUEST_ID", "the failover request's id"


class FailoverList(Lister):
    """List failover requests, newest first."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument(
            "--state",
            type=status_choices("failover"),
            action="append",
            default=[],
            metavar="STATE",
            help="only requests in this state (repeatable): PENDING, RUNNING, SUCCEEDED, "
            "FAILED, ABANDONED",
        )
        parser.add_argument("--amphora", metavar="AMPHORA_ID", help="only this amphora's")
        parser.add_argument("--lb", metavar="LB", help="only this load balancer's")
        parser.add_argument(
            "--limit", type=int, metavar="N", help="at most N requests (the newest)"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        if parsed_args.limit is not None and parsed_args.limit < 1:
            raise UsageError(f"--limit: {parsed_args.limit} is not a positive number")

        def work(conn: Any) -> list[dict[str, Any]]:
            amphora = lb = None
            if parsed_args.amphora is not None:
                amphora = Q.resolve(conn, Q.AMPHORA, parsed_args.amphora)["id"]
            if parsed_args.lb is not None:
                lb = Q.resolve(conn, Q.LOAD_BALANCER, parsed_args.lb)["id"]
            return Q.list_failover_requests(
                conn,
                states=parsed_args.state,
                amphora=amphora,
                load_balancer=lb,
                limit=parsed_args.limit,
            )

        with Context(parsed_args) as ctx:
            return table(ctx.read(work), Q.FAILOVER_COLUMNS)


class FailoverShow(_OnRequest):
    """Show a failover request, with its last error."""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        wanted = request_id(parsed_args.request)
        with Context(parsed_args) as ctx:
            return one(ctx.read(lambda c: Q.failover_request(c, wanted)), SHOW_FIELDS)


class FailoverRetry(_OnRequest):
    """Run a FAILED or ABANDONED failover request again (attempts and last_error are kept).

    The request goes back to RUNNING without owner or lease, and the amphora is busy;
    the next live manager runs it. Refused (exit 7) for a request in another state.
    """

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        wanted = request_id(parsed_args.request)
        with Context(parsed_args) as ctx:
            request = admin.retry(ctx.engine(), wanted)
        self.say(
            f"failover request {wanted} retried: {request['previous_state']} -> RUNNING; "
            f"amphora {request['amphora_id']} busy; a manager runs it within a health-check "
            "interval"
        )
        return one(request, SHOW_FIELDS)

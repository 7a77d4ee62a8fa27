"""`healthmgr amphora list|show|failover|release|resume`.

Ages are measured with the database's clock; an amphora is stale when its last
heartbeat (``amphora_health.last_update``) is older than the configured
``heartbeat_timeout``. The write actions are one transaction each and print a
confirmation line on stderr, the object on stdout.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
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
from healthmgr.db import admin
from healthmgr.db import queries as Q

SHOW_FIELDS = (
    *Q.AMPHORA_COLUMNS, "compute_id", "vrrp_ip", "ha_ip", "observed_at", "healthy",
    "created_at", "updated_at", "open_failover_requests",
)  # fmt: skip


def requested_by() -> str:
    """``cli:<user>@<host>``: who asked for a manual failover, for the request row."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


class _OnAmphora(ShowOneById):
    """One amphora, named by AMPHORA_ID."""

    id_dest, id_metavar, id_help = "amphora", "AMPHORA_ID", "the amphora's id"


class AmphoraList(Lister):
    """List amphorae with their last heartbeat, its age, stale, busy and last observer."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        parser.add_argument("--lb", metavar="LB", help="only the amphorae of this load balancer")
        parser.add_argument(
            "--stale", action="store_true", help="only those older than heartbeat_timeout"
        )
        parser.add_argument("--busy", action="store_true", help="only busy ones")
        parser.add_argument(
            "--status",
            type=status_choices("amphora"),
            action="append",
            default=[],
            metavar="STATUS",
            help="only amphorae with this status (repeatable; default: all but DELETED)",
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        with Context(parsed_args) as ctx:
            timeout = ctx.settings.health_manager.heartbeat_timeout

            def work(conn: Any) -> list[dict[str, Any]]:
                lb = None
                if parsed_args.lb is not None:
                    lb = Q.resolve(conn, Q.LOAD_BALANCER, parsed_args.lb)["id"]
                return Q.list_amphorae(
                    conn,
                    timeout=timeout,
                    load_balancer=lb,
                    stale=parsed_args.stale,
                    busy=parsed_args.busy,
                    statuses=parsed_args.status,
                )

            return table(ctx.read(work), Q.AMPHORA_COLUMNS)


class AmphoraShow(_OnAmphora):
    """Show an amphora, its health and its open failover requests."""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            timeout = ctx.settings.health_manager.heartbeat_timeout

            def work(conn: Any) -> dict[str, Any]:
                amphora = Q.resolve(conn, Q.AMPHORA, parsed_args.amphora)
                details = Q.amphora_details(conn, amphora["id"], timeout=timeout)
                assert details is not None
                return details

            row = ctx.read(work)
        row["open_failover_requests"] = [describe_request(r) for r in row["open_failover_requests"]]
        return one(row, SHOW_FIELDS)


def describe_request(request: dict[str, Any]) -> str:
    owner = f", owner {request['owner']}" if request.get("owner") else ""
    return f"{request['id']} {request['state']} ({request['reason']}{owner})"


class AmphoraFailover(_OnAmphora):
    """Request a failover of an amphora now, through the configured failover driver.

    Writes a RUNNING failover request (reason "manual", requested_by cli:USER@HOST)
    and marks the amphora busy, in one transaction; the next live manager runs it
    within a health-check interval. Refused (exit 7) while the amphora has an open
    request.
    """

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            request = admin.request_failover(ctx.engine(), parsed_args.amphora, requested_by())
        self.say(
            f"failover of amphora {request['amphora_id']} requested: request {request['id']} "
            "(RUNNING, manual); amphora busy; a manager runs it within a health-check interval"
        )
        return one(request, Q.FAILOVER_COLUMNS)


class AmphoraRelease(_OnAmphora):
    """Clear an amphora's busy flag, so managers judge it again.

    Refused (exit 7) while a RUNNING failover request holds an unexpired lease on it,
    unless --force.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--force", action="store_true", help="release even while a manager holds a lease"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            done = admin.release(ctx.engine(), parsed_args.amphora, force=parsed_args.force)
        note = "busy cleared" if done["was_busy"] else "it was not busy; nothing to clear"
        self.say(f"amphora {done['id']} released: {note}")
        done["open_requests"] = [describe_request(r) for r in done["open_requests"]]
        return one(done, ("id", "was_busy", "busy", "open_requests"))


class AmphoraResume(_OnAmphora):
    """Return an amphora the circuit breaker stopped (FAILOVER_STOPPED) to ALLOCATED."""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], tuple]:
        with Context(parsed_args) as ctx:
            done = admin.resume(ctx.engine(), parsed_args.amphora)
        self.say(f"amphora {done['id']} resumed: FAILOVER_STOPPED -> ALLOCATED")
        return one(done)

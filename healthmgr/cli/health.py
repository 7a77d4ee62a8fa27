"""`healthmgr health`: the cluster at a glance, usable as a monitoring check.

One row per check: the database's schema revision, each manager's liveness and
last flush, check and claim, the circuit breaker, stale amphorae and failovers
an operator must look at. Exit 0 when every row is OK, 1 when one needs
attention, 5 when the schema is not at head (4 when the database is unreachable).
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from healthmgr.cli.base import Context, Lister, add_database_options, hint_location
from healthmgr.cli.errors import Exit, keep_location
from healthmgr.db import queries as Q
from healthmgr.rules import constants as C

OK, ATTENTION = "OK", "ATTENTION"
COLUMNS = ("check", "state", "detail")
LISTED = 10  # stale amphorae named in the detail; the rest are counted

Check = tuple[str, str, str]


class Health(Lister):
    """Show the cluster at a glance; exit 1 when something needs attention (docs/cli.md)."""

    exit_code = Exit.OK

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_database_options(parser)
        return parser

    def run(self, parsed_args: argparse.Namespace) -> int:
        return super().run(parsed_args) or int(self.exit_code)

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        with Context(parsed_args) as ctx:
            rows = [self._schema(ctx, parsed_args)]
            if rows[0][1] == OK:
                timeout = ctx.settings.health_manager.heartbeat_timeout
                rows += ctx.read(lambda conn: cluster_checks(conn, timeout))
            else:
                self.exit_code = Exit.SCHEMA
        if self.exit_code == Exit.OK and any(state != OK for _, state, _ in rows):
            self.exit_code = Exit.FAILED
        return COLUMNS, rows

    def _schema(self, ctx: Context, args: argparse.Namespace) -> Check:
        from healthmgr.cli.db import position
        from healthmgr.db import migrate
        from healthmgr.db.engine import describe

        rev = migrate.current(ctx.engine(check_schema=False))
        where = describe(ctx.url())
        if rev == migrate.head():
            return ("database", OK, f"{where}: schema at {rev} (head)")
        detail = keep_location(position(rev), *hint_location(args))
        return ("database", ATTENTION, f"{where}: schema at {rev or 'none'}, {detail}")


def cluster_checks(conn: Any, timeout: float) -> list[Check]:
    now, managers = Q.managers(conn)
    return [
        *manager_checks(now, managers),
        breaker_check(managers, Q.stopped_amphorae(conn)),
        stale_check(Q.list_amphorae(conn, timeout=timeout, stale=True), timeout),
        failed_check(conn, timeout),
    ]


def _ago(now: dt.datetime, then: dt.datetime | None) -> str:
    return "never" if then is None else f"{(now - then).total_seconds():.1f} s ago"


def manager_checks(now: dt.datetime, managers: list[dict[str, Any]]) -> list[Check]:
    rows: list[Check] = []
    for m in managers:
        times = (
            f"last flush {_ago(now, m['last_flush_at'])}, last check "
            f"{_ago(now, m['last_check_at'])}, last claim {_ago(now, m['last_claim_at'])}"
        )
        name = f"manager {m['manager_id']}"
        if m["stopped_at"] is not None:
            rows.append((name, OK, f"stopped {_ago(now, m['stopped_at'])}; {times}"))
        elif not m["live"]:
            rows.append(
                (name, ATTENTION, f"no liveness for {_ago(now, m['heartbeat_at'])[:-4]}, "
                 f"not stopped cleanly (dead or cut off?); {times}")
            )  # fmt: skip
        elif m["impaired"]:
            reason = m["impaired_reason"] or "no reason recorded"
            rows.append((name, ATTENTION, f"live but impaired: {reason}; {times}"))
        else:
            rows.append((name, OK, f"live, heartbeat {_ago(now, m['heartbeat_at'])}; {times}"))
    if not any(m["live"] for m in managers):
        seen = f" ({len(managers)} known)" if managers else ""
        rows.append(("managers", ATTENTION, f"no live manager{seen}: nobody judges amphorae"))
    return rows


def breaker_check(managers: list[dict[str, Any]], stopped: list[str]) -> Check:
    open_on = [m for m in managers if m["live"] and m["breaker_open"]]
    if open_on:
        why = "; ".join(
            f"{m['manager_id']}: {m['breaker_reason'] or 'no reason recorded'}" for m in open_on
        )
        return ("circuit breaker", ATTENTION, f"open ({why}); {len(stopped)} FAILOVER_STOPPED")
    if stopped:
        return (
            "circuit breaker",
            ATTENTION,
            f"closed, but {len(stopped)} amphorae are {C.FAILOVER_STOPPED} "
            "(`healthmgr amphora resume ID` once they are dealt with): "
            + ", ".join(stopped[:LISTED]),
        )
    return ("circuit breaker", OK, "closed")


def stale_check(stale: list[dict[str, Any]], timeout: float) -> Check:
    if not stale:
        return ("stale amphorae", OK, f"none (heartbeat_timeout {timeout:g} s)")
    unattended = [a for a in stale if not a["busy"]]
    named = ", ".join(
        f"{a['id']} ({a['age']:g} s{', busy' if a['busy'] else ''})" for a in stale[:LISTED]
    )
    more = f" and {len(stale) - LISTED} more" if len(stale) > LISTED else ""
    state = ATTENTION if unattended else OK
    return (
        "stale amphorae",
        state,
        f"{len(stale)} older than heartbeat_timeout {timeout:g} s, "
        f"{len(unattended)} not busy: {named}{more}",
    )


def failed_check(conn: Any, timeout: float) -> Check:
    """FAILED requests whose amphora is still busy and has no open request: stuck."""
    busy = {a["id"] for a in Q.list_amphorae(conn, timeout=timeout, busy=True)}
    open_ = {r["amphora_id"] for r in Q.list_failover_requests(conn, states=Q.OPEN_FAILOVER_STATES)}
    stuck, seen = [], set()
    for request in Q.list_failover_requests(conn, states=[C.FAILOVER_FAILED], limit=1000):
        amphora = request["amphora_id"]
        if amphora in busy and amphora not in open_ and amphora not in seen:
            seen.add(amphora)
            stuck.append(request)
    if not stuck:
        return ("failovers", OK, f"{len(open_)} amphorae with an open request, none stuck")
    ids = ", ".join(str(r["id"]) for r in stuck[:LISTED])
    return (
        "failovers",
        ATTENTION,
        f"{len(stuck)} FAILED with the amphora still busy (`healthmgr failover retry ID` "
        f"or `healthmgr amphora release AMPHORA_ID`): requests {ids}",
    )

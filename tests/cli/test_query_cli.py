"""Query commands and write actions on SQLite, PostgreSQL and MariaDB.

The real process runs once per command family, on SQLite (the wiring: options,
formatters, exit statuses): status, loadbalancer, amphora, failover, stats. On the
servers, and for the details, the same application runs in-process.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from healthmgr.db.models import FailoverRequest, ListenerStatistics
from healthmgr.wire.ids import id_str
from tests.cli.clitest import Db, cli, on_sqlite_as_a_process, one_error_line
from tests.db.factories import SeedIds, make_seed_lb

pytestmark = pytest.mark.usefixtures("no_healthmgr_env")


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=seconds)


@dataclass
class Topology:
    db: Db
    web: SeedIds  # lb "web": 1 listener, its pool, 2 members, 1 fresh amphora
    api: SeedIds  # lb "api": 2 listeners, 3 pools (one no listener's default), 2 stale amphorae

    def run(self, *args: str) -> object:
        return cli(*args, *self.db.args)

    def proc(self, *args: str) -> object:
        return on_sqlite_as_a_process(self.db.url, *args, *self.db.args)


@pytest.fixture
def topo(db: Db) -> Topology:
    web = make_seed_lb(db.engine)
    api = make_seed_lb(db.engine, listeners=2, pools=3, amphorae=2, last_update=ago(600))
    db.execute("UPDATE load_balancer SET name = 'web' WHERE id = :i", i=id_str(web.load_balancer))
    db.execute("UPDATE load_balancer SET name = 'api' WHERE id = :i", i=id_str(api.load_balancer))
    db.execute(
        "UPDATE member SET operating_status = 'ERROR' WHERE id = :i", i=id_str(api.members[0])
    )
    return Topology(db, web, api)


# -- status show --------------------------------------------------------------------------


def test_status_show_json_is_octavias_status_root_response(topo: Topology) -> None:
    done = topo.proc("status", "show", "api", "-f", "json")
    assert done.returncode == 0, done.stderr
    root = json.loads(done.stdout)
    assert list(root) == ["statuses"] and list(root["statuses"]) == ["loadbalancer"]
    lb = root["statuses"]["loadbalancer"]
    assert set(lb) == {
        "id",
        "name",
        "operating_status",
        "provisioning_status",
        "listeners",
        "pools",
    }
    assert (lb["id"], lb["name"]) == (id_str(topo.api.load_balancer), "api")
    assert [li["id"] for li in lb["listeners"]] == [id_str(i) for i in topo.api.listeners]
    for listener, pool_id in zip(lb["listeners"], topo.api.pools, strict=False):
        assert set(listener) == {"id", "name", "operating_status", "provisioning_status", "pools"}
        (pool,) = listener["pools"]  # its default pool
        assert pool["id"] == id_str(pool_id)
        assert set(pool) == {
            "id", "name", "provisioning_status", "operating_status", "health_monitor", "members",
        }  # fmt: skip
        assert set(pool["health_monitor"]) == {
            "id", "name", "type", "provisioning_status", "operating_status",
        }  # fmt: skip
        for member in pool["members"]:
            assert set(member) == {
                "id", "name", "operating_status", "provisioning_status", "address",
                "protocol_port",
            }  # fmt: skip
    first_member = lb["listeners"][0]["pools"][0]["members"][0]
    assert (first_member["name"], first_member["operating_status"]) == ("web-1", "ERROR")
    # The pool that is no listener's default pool: under the load balancer.
    assert [p["id"] for p in lb["pools"]] == [id_str(topo.api.pools[2])]


def test_status_show_draws_the_tree(topo: Topology) -> None:
    done = topo.run("status", "show", "web")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["load", "balancer", "web", "ACTIVE", "ONLINE"]
    assert lines[1].startswith("└── listener listener1 HTTP:80 ")
    assert lines[2].startswith("    └── pool pool1 ROUND_ROBIN ")
    assert lines[3].startswith("        ├── health monitor HTTP ")
    assert lines[4].startswith("        ├── member web-1 127.0.0.1:8000 ")
    assert lines[5].startswith("        └── member web-2 127.0.0.2:8001 ")
    assert all(line.split()[-2:] == ["ACTIVE", "ONLINE"] for line in lines)
    assert len({line.index("ACTIVE") for line in lines}) == 1  # statuses in one column


# -- load balancers, listeners, pools, members ---------------------------------------------


def test_value_c_id_round_trips_through_show(topo: Topology) -> None:
    done = topo.run("loadbalancer", "list", "-f", "value", "-c", "id", "--sort-column", "name")
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert ids == [id_str(topo.api.load_balancer), id_str(topo.web.load_balancer)]
    for ident in ids:
        shown = topo.run("loadbalancer", "show", ident, "-f", "json")
        assert json.loads(shown.stdout)["id"] == ident
    listener = topo.run("listener", "list", "--loadbalancer", "api", "-f", "value", "-c", "id")
    assert listener.stdout.split() == [id_str(i) for i in topo.api.listeners]
    pool = topo.run("pool", "show", id_str(topo.api.pools[0]), "-f", "json")
    assert json.loads(pool.stdout)["members"] == sorted(
        id_str(m) for m in topo.api.members_by_pool[topo.api.pools[0]]
    )
    members = topo.run(
        "member", "list", "--loadbalancer", "api", "--operating-status", "error", "-f", "value",
        "-c", "id",
    )  # fmt: skip
    assert members.stdout.split() == [id_str(topo.api.members[0])]


def test_filters_and_names(topo: Topology) -> None:
    online = topo.run("pool", "list", "--loadbalancer", "web", "-f", "value", "-c", "name")
    assert online.stdout.split() == ["pool1"]
    none = topo.run("loadbalancer", "list", "--provisioning-status", "PENDING_UPDATE", "-f", "json")
    assert json.loads(none.stdout) == []
    member = topo.run(
        "member", "show", "web-2", "--pool", id_str(topo.web.pool), "-f", "value", "-c", "id"
    )
    assert member.stdout.strip() == id_str(topo.web.members[1])


def test_lookup_errors(topo: Topology) -> None:
    unknown = topo.proc("loadbalancer", "show", "nope")
    assert unknown.returncode == 6
    assert one_error_line(unknown) == "healthmgr: error: no load balancer with id or name 'nope'"
    ambiguous = topo.run("member", "show", "web-1")  # one in each of four pools
    assert ambiguous.returncode == 6
    assert "members are named 'web-1'" in one_error_line(ambiguous)
    bad = topo.run("loadbalancer", "list", "--operating-status", "GREEN")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "healthmgr loadbalancer list: error: argument --operating-status: 'GREEN' is not a "
        "valid operating status (choose from ONLINE, DEGRADED, ERROR, NO_MONITOR, OFFLINE, "
        "DRAINING) (see --help)"
    ]


# -- amphorae and failovers ---------------------------------------------------------------


def test_amphora_list_failover_show_release(topo: Topology) -> None:
    db = topo.db
    stale = topo.run("amphora", "list", "--stale", "-f", "value", "-c", "id")
    assert stale.returncode == 0, stale.stderr
    assert sorted(stale.stdout.split()) == sorted(id_str(a) for a in topo.api.amphorae)
    amphora = id_str(topo.api.amphorae[0])

    done = topo.proc("amphora", "failover", amphora, "-f", "json")
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    assert (request["state"], request["reason"], request["attempts"]) == ("RUNNING", "manual", 0)
    assert (request["owner"], request["lease_expires_at"]) == (None, None)
    assert request["requested_by"].startswith("cli:")
    assert done.stderr.startswith(f"failover of amphora {amphora} requested: request ")
    assert db.scalar("SELECT busy FROM amphora_health WHERE amphora_id = :a", a=amphora)

    again = topo.run("amphora", "failover", amphora)
    assert again.returncode == 7
    assert "has an open failover request" in one_error_line(again)
    assert db.scalar("SELECT COUNT(*) FROM failover_request") == 1  # nothing half-written

    shown = json.loads(topo.run("amphora", "show", amphora, "-f", "json").stdout)
    assert shown["open_failover_requests"] == [f"{request['id']} RUNNING (manual)"]
    assert (shown["stale"], shown["busy"]) == (True, True)
    busy = topo.run("amphora", "list", "--busy", "--lb", "api", "-f", "value", "-c", "id")
    assert busy.stdout.split() == [amphora]

    # A manager holds the request under a lease: release is refused, --force releases.
    db.execute("UPDATE failover_request SET owner = 'hm-1', lease_expires_at = :t", t=ago(-3600))
    refused = topo.run("amphora", "release", amphora)
    assert refused.returncode == 7 and "holds a lease until" in refused.stderr
    assert db.scalar("SELECT busy FROM amphora_health WHERE amphora_id = :a", a=amphora)
    forced = topo.run("amphora", "release", amphora, "--force", "-f", "json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["was_busy"] is True
    assert not db.scalar("SELECT busy FROM amphora_health WHERE amphora_id = :a", a=amphora)


def test_manual_failover_inserts_the_health_row_when_missing(topo: Topology) -> None:
    amphora = id_str(topo.web.amphora)
    topo.db.execute("DELETE FROM amphora_health WHERE amphora_id = :a", a=amphora)
    assert topo.run("amphora", "failover", amphora).returncode == 0
    assert topo.db.scalar("SELECT busy FROM amphora_health WHERE amphora_id = :a", a=amphora)


def test_resume_and_retry(topo: Topology) -> None:
    db = topo.db
    amphora = id_str(topo.api.amphorae[1])
    db.execute("UPDATE amphora SET status = 'FAILOVER_STOPPED' WHERE id = :a", a=amphora)
    done = topo.run("amphora", "resume", amphora, "-f", "value", "-c", "status")
    assert (done.returncode, done.stdout) == (0, "ALLOCATED\n"), done.stderr
    again = topo.run("amphora", "resume", amphora)
    assert again.returncode == 7 and "is ALLOCATED, not FAILOVER_STOPPED" in again.stderr

    with db.engine.begin() as conn:
        request = conn.execute(
            sa.insert(FailoverRequest).values(
                amphora_id=amphora, load_balancer_id=id_str(topo.api.load_balancer),
                reason="heartbeat_timeout", requested_by="hm-1", requested_at=ago(60),
                state="FAILED", attempts=3, last_error="exit 1: boom",
            )
        ).inserted_primary_key[0]  # fmt: skip
    retried = topo.proc("failover", "retry", str(request), "-f", "json")
    assert retried.returncode == 0, retried.stderr
    row = json.loads(retried.stdout)
    assert (row["state"], row["attempts"], row["last_error"]) == ("RUNNING", 3, "exit 1: boom")
    assert (row["owner"], row["lease_expires_at"]) == (None, None)
    assert db.scalar("SELECT busy FROM amphora_health WHERE amphora_id = :a", a=amphora)
    listed = topo.run("failover", "list", "--state", "running", "-f", "value", "-c", "id")
    assert listed.stdout.split() == [str(request)]
    not_failed = topo.run("failover", "retry", str(request))
    assert not_failed.returncode == 7 and "is RUNNING" in not_failed.stderr
    assert topo.run("failover", "show", "999").returncode == 6
    assert topo.run("failover", "show", "x").returncode == 2


# -- statistics ----------------------------------------------------------------------------


def test_stats_show_sums_over_amphorae(topo: Topology) -> None:
    rows = []
    for n, (listener, amphora) in enumerate(
        [(li, a) for li in topo.api.listeners for a in topo.api.amphorae], start=1
    ):
        rows.append(
            dict(listener_id=id_str(listener), amphora_id=id_str(amphora), bytes_in=100 * n,
                 bytes_out=1000 * n, active_connections=n, total_connections=10 * n,
                 request_errors=n % 2, last_seq=1)
        )  # fmt: skip
    with topo.db.engine.begin() as conn:
        conn.execute(sa.insert(ListenerStatistics), rows)
    done = topo.proc("stats", "show", "api", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "active_connections": 10,
        "bytes_in": 1000,
        "bytes_out": 10000,
        "request_errors": 2,
        "total_connections": 100,
    }
    one = topo.run("stats", "show", id_str(topo.api.listeners[1]), "-f", "value", "-c", "bytes_in")
    assert one.stdout == "700\n"  # rows 3 and 4
    assert topo.run("stats", "show", "nope").returncode == 6

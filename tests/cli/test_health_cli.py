"""`healthmgr health` as a monitoring check: exit 0 when all is well, non-zero otherwise."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa

from healthmgr.db import migrate
from healthmgr.db.models import ManagerRecord
from healthmgr.db.queries import db_now
from tests.cli.clitest import Db, cli, on_sqlite_as_a_process
from tests.db.factories import make_seed_lb

pytestmark = pytest.mark.usefixtures("no_healthmgr_env")


def add_manager(db: Db, manager_id: str, *, age: float = 0.5, **values: object) -> None:
    """A healthmgr_manager row whose heartbeat is ``age`` seconds old (database clock)."""
    with db.engine.begin() as conn:
        now = db_now(conn)
        row = {
            "manager_id": manager_id,
            "hostname": "host",
            "pid": 1,
            "version": "0.1.0",
            "started_at": now - dt.timedelta(seconds=60),
            "heartbeat_at": now - dt.timedelta(seconds=age),
            "impaired": False,
            "healthy_since": now - dt.timedelta(seconds=60),
            "last_flush_at": now - dt.timedelta(seconds=1),
            "last_check_at": now - dt.timedelta(seconds=2),
            "breaker_open": False,
            **values,
        }
        conn.execute(sa.insert(ManagerRecord), [row])


def checks(done: object) -> dict[str, tuple[str, str]]:
    return {c["check"]: (c["state"], c["detail"]) for c in json.loads(done.stdout)}  # type: ignore[attr-defined]


def test_all_well_exits_0_and_a_stale_amphora_exits_1(db: Db) -> None:
    make_seed_lb(db.engine)
    add_manager(db, "hm-1")
    done = on_sqlite_as_a_process(db.url, "health", *db.args, "-f", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    found = checks(done)
    assert found["database"] == ("OK", found["database"][1])
    assert found["database"][1].endswith(f"schema at {migrate.head()} (head)")
    assert found["manager hm-1"][0] == "OK"
    assert re.search(r"last flush \d+\.\d s ago", found["manager hm-1"][1])
    assert "last claim never" in found["manager hm-1"][1]
    assert {found[k][0] for k in ("circuit breaker", "stale amphorae", "failovers")} == {"OK"}

    seed = make_seed_lb(db.engine, last_update=dt.datetime.now(dt.UTC).replace(tzinfo=None)
                        - dt.timedelta(seconds=300))  # fmt: skip
    stale = cli("health", *db.args, "-f", "json")
    assert stale.returncode == 1
    state, detail = checks(stale)["stale amphorae"]
    assert state == "ATTENTION" and detail.startswith("1 older than heartbeat_timeout 60 s")
    assert str(seed.amphora.hex()[:8]) in detail.replace("-", "")


def test_breaker_impaired_and_dead_managers_need_attention(sqlite_db: Db) -> None:
    db = sqlite_db
    add_manager(db, "hm-open", breaker_open=True, breaker_reason="5 stale >= threshold 3")
    add_manager(db, "hm-impaired", impaired=True, impaired_reason="db_stalled")
    add_manager(db, "hm-dead", age=120)
    add_manager(db, "hm-gone", age=120, stopped_at=dt.datetime(2026, 1, 1))
    done = cli("health", *db.args, "-f", "json")
    assert done.returncode == 1
    found = checks(done)
    assert found["circuit breaker"] == (
        "ATTENTION", "open (hm-open: 5 stale >= threshold 3); 0 FAILOVER_STOPPED"
    )  # fmt: skip
    assert found["manager hm-impaired"] == ("ATTENTION", found["manager hm-impaired"][1])
    assert "impaired: db_stalled" in found["manager hm-impaired"][1]
    assert found["manager hm-dead"][0] == "ATTENTION"
    assert found["manager hm-gone"][0] == "OK"


def test_no_manager_at_all_needs_attention(sqlite_db: Db) -> None:
    done = cli("health", *sqlite_db.args, "-f", "json")
    assert done.returncode == 1
    assert checks(done)["managers"][0] == "ATTENTION"


def test_schema_behind_exits_5_naming_the_upgrade(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    migrate.upgrade(url, "0001")
    done = cli("health", "--db-url", url, "-f", "json")
    assert done.returncode == 5
    (database,) = json.loads(done.stdout)
    assert database["state"] == "ATTENTION"
    assert f"run `healthmgr db upgrade --db-url {url}`" in database["detail"]


def test_unreachable_database_exits_4() -> None:
    done = cli("health", "--db-url", "postgresql://127.0.0.1:1/hm")
    assert done.returncode == 4
    assert done.stderr.startswith("healthmgr: error: cannot reach the database")

"""The CLI on Octavia's database: schema checks, query commands and write actions.

In-process through the same application as the real command (tests/cli/clitest.py);
the database is Octavia 19.0.0's schema from its own migrations, on MariaDB.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from tests.cli.clitest import cli, one_error_line
from tests.octavia import cases as gen

pytestmark = [pytest.mark.mysql, pytest.mark.usefixtures("no_healthmgr_env")]


def test_the_wrong_schema_is_refused_in_one_line_and_nothing_is_written(
    octavia_database: Callable[..., str],
) -> None:
    url = octavia_database(healthmgr_tables=False)
    done = cli("db", "upgrade", "--db-url", url)  # schema "healthmgr", the default
    assert done.returncode == 5
    line = one_error_line(done)
    assert "Octavia's schema" in line and 'schema = "octavia"' in line
    engine = make_engine(url)
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert not {n for n in names if n.startswith("healthmgr")}
    done = cli("db", "current", "--db-url", url, "--schema", "auto", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["head"] == "o001"


def test_query_commands_and_actions_work_on_octavias_database(octavia_db_url: str) -> None:
    case = gen.simple(random.Random(9))
    amphora = case.amphorae[0]
    engine = make_engine(octavia_db_url)
    with engine.begin() as conn:
        gen.insert(conn, [case])
        gen.stale_health(conn, [amphora], 5)
        conn.execute(
            sa.text("INSERT INTO listener_statistics VALUES (:l, 100, 200, 3, 4, :a, 1)"),
            {"l": case.listeners[0].id, "a": amphora},
        )
    db = ("--db-url", octavia_db_url, "--schema", "octavia")

    def run(*args: str) -> object:
        done = cli(*args, *db, "-f", "json")
        assert done.returncode == 0, (args, done.stderr)
        return json.loads(done.stdout)

    assert [r["id"] for r in run("loadbalancer", "list")] == [case.lb_id]
    assert [r["id"] for r in run("member", "list")] == [case.pools[0].members[0].id]
    tree = run("status", "show", case.lb_id)["statuses"]["loadbalancer"]
    assert tree["listeners"][0]["pools"][0]["members"][0]["operating_status"] == "ONLINE"
    stats = run("stats", "show", case.lb_id)
    assert (stats["bytes_in"], stats["bytes_out"], stats["total_connections"]) == (100, 200, 4)
    assert run("amphora", "show", amphora)["id"] == amphora
    requested = run("amphora", "failover", amphora)
    assert requested["state"] == "RUNNING"
    with engine.connect() as conn:
        busy = conn.execute(sa.text("SELECT busy FROM amphora_health")).scalar()
    engine.dispose()
    assert busy
    assert [r["amphora_id"] for r in run("failover", "list")] == [amphora]


def test_config_check_on_an_octavia_conf_points_at_the_import(tmp_path: Path) -> None:
    conf = tmp_path / "octavia.conf"
    conf.write_text(
        "[DEFAULT]\ntransport_url = rabbit://u:p@h:5672/\n\n"
        "[health_manager]\nbind_ip = 10.0.0.1\nheartbeat_key = k\n"
    )
    done = cli("config", "check", "--config", str(conf))
    assert done.returncode == 3
    assert "healthmgr config import-octavia" in done.stderr


def test_the_octavia_schema_migrates_down_and_up_leaving_octavias_tables_alone(
    octavia_database: Callable[..., str],
) -> None:
    from healthmgr.db import migrate
    from healthmgr.db.octavia_schema import OWN_TABLES

    url = octavia_database(healthmgr_tables=False)
    engine = make_engine(url)

    def tables() -> set[str]:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())

    def definitions() -> dict[str, str]:
        """Octavia's tables as MariaDB has them: columns, indexes, options."""
        with engine.connect() as conn:
            show = "SHOW CREATE TABLE `{}`"
            return {t: conn.exec_driver_sql(show.format(t)).one()[1] for t in sorted(octavia)}

    octavia = tables()
    created = definitions()
    # The native schema's 0003 drops an index of its own amphora_health: not Octavia's.
    assert "last_update" in created["amphora_health"]
    assert migrate.upgrade(url, schema="octavia") == (None, "o001")
    assert tables() - octavia == {*OWN_TABLES, "healthmgr_alembic_version"}
    assert definitions() == created
    assert migrate.upgrade(url, schema="octavia") == ("o001", "o001")  # idempotent
    assert migrate.downgrade(url, "base", schema="octavia") == ("o001", None)
    assert tables() - octavia == {"healthmgr_alembic_version"}
    assert definitions() == created
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM alembic_version")).scalar() == 1
    engine.dispose()

"""docs/migrating-from-octavia.md, followed command by command.

On a MariaDB database created by Octavia 19.0.0's own migrations, with an
``octavia.conf`` as a deployment has it and a real oslo.messaging worker on
RabbitMQ: every ``$ healthmgr ...`` line of the guide's console blocks is run
as a real subprocess, in the guide's order (paths swapped for the test's),
and does what the guide says it does.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from healthmgr.db.engine import make_engine
from healthmgr.db.octavia_schema import OWN_TABLES
from healthmgr.wire import octavia as octavia_wire
from tests.manager.harness import free_port, start_daemon, wait_until
from tests.octavia import cases as gen
from tests.octavia.rpc_worker import Worker

pytestmark = pytest.mark.mysql

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-octavia.md"
KEY = "insecure-shared-key"


def guide_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", GUIDE.read_text(), re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def run(command: str, paths: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for placeholder, actual in paths.items():
        command = command.replace(placeholder, actual)
    argv = command.split()
    assert argv[0] == "healthmgr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMGR_")}
    return subprocess.run(
        [sys.executable, "-m", "healthmgr", *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_migration_guide_works_as_written(
    octavia_database: Callable[..., str], worker: Worker, tmp_path: Path
) -> None:
    recorder, exchange, rabbit_url = worker
    url = octavia_database(healthmgr_tables=False)
    case = gen.simple(random.Random(3))
    amphora = case.amphorae[0]
    engine = make_engine(url)
    with engine.begin() as conn:
        gen.insert(conn, [case])
        tables_before = set(sa.inspect(conn).get_table_names())
        octavia_revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    port = free_port()
    octavia_conf = tmp_path / "octavia.conf"
    octavia_conf.write_text(
        f"[DEFAULT]\ntransport_url = {rabbit_url}\ncontrol_exchange = {exchange}\n"
        "log_dir = /var/log/octavia\n\n"
        f"[database]\nconnection = {url}\nmax_pool_size = 20\n\n"
        f"[health_manager]\nbind_ip = 127.0.0.1\nbind_port = {port}\n"
        f"controller_ip_port_list = 127.0.0.1:{port}\nheartbeat_key = {KEY}\n"
        "heartbeat_interval = 1\nheartbeat_timeout = 3\nhealth_check_interval = 1\n"
        "health_update_threads = 4\n\n"
        "[controller_worker]\namp_image_tag = amphora\n"
    )
    toml = tmp_path / "healthmgr.toml"
    paths = {
        "/etc/octavia/octavia.conf": str(octavia_conf),
        "/etc/healthmgr/healthmgr.toml": str(toml),
        "LOAD_BALANCER_ID": case.lb_id,
    }
    commands = iter(guide_commands())

    # 1. Import the configuration; what is not carried over is named.
    done = run(next(commands), paths)
    assert done.returncode == 0, done.stderr
    assert "not carried over: [health_manager] health_update_threads:" in done.stderr
    assert "not carried over: [database] max_pool_size:" in done.stderr
    assert "not carried over: [controller_worker] amp_image_tag:" in done.stderr
    # "Then edit the file": the metrics endpoint (and the test's log format).
    metrics = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    with toml.open("a") as handle:
        handle.write(f'\n[metrics]\nbind = "{metrics}"\n\n[logging]\nformat = "json"\n')

    # 2. The check finds Octavia's schema without healthmgr's tables (exit 5), the
    # upgrade creates only healthmgr's, the second check passes and names the schema.
    done = run(next(commands), paths)
    assert done.returncode == 5, done.stderr
    done = run(next(commands), paths)
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        added = set(sa.inspect(conn).get_table_names()) - tables_before
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
            octavia_revision
        )
    assert added == {*OWN_TABLES, "healthmgr_alembic_version"}
    done = run(next(commands) + " -f json", paths)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["schema"].startswith("octavia (configured): found Octavia's")

    # 3. serve; Octavia's agent's heartbeats move the statuses; the queries read them.
    serve = next(commands)
    assert serve == "healthmgr serve --config /etc/healthmgr/healthmgr.toml"
    daemon = start_daemon(toml)
    try:
        (member,) = case.pools[0].members
        message = {
            "id": amphora,
            "seq": 0,
            "ver": 2,
            "listeners": {
                case.listeners[0].id: {
                    "status": "OPEN",
                    "stats": {"rx": 10, "tx": 20, "conns": 1, "totconns": 3, "ereq": 0},
                }
            },
            "pools": {
                f"{case.pools[0].id}:{case.listeners[0].id}": {
                    "status": "UP",
                    "members": {member.id: "DOWN"},
                }
            },
        }
        for seq in range(3):
            daemon.send(octavia_wire.encode({**message, "seq": seq}, KEY.encode()))
            time.sleep(0.3)
        status = next(commands)

        def tree() -> dict:
            done = run(status + " -f json", paths)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)["statuses"]["loadbalancer"]

        lb = wait_until(
            lambda: (t := tree())["operating_status"] == "DEGRADED" and t,
            what="the load balancer DEGRADED",
        )
        assert lb["listeners"][0]["pools"][0]["members"][0]["operating_status"] == "ERROR"
        # Statistics in Octavia's table: three v2 heartbeats, the same absolute counters.
        with engine.connect() as conn:
            stats = conn.execute(
                sa.text(
                    "SELECT bytes_in, bytes_out, active_connections, total_connections, "
                    "request_errors FROM listener_statistics"
                )
            ).all()
        assert [tuple(r) for r in stats] == [(10, 20, 1, 3, 0)]
        done = run(next(commands) + " -f json", paths)
        assert done.returncode == 0, done.stderr
        assert [a["id"] for a in json.loads(done.stdout)] == [amphora]

        # The amphora dies: its failover reaches Octavia's worker, once.
        wait_until(lambda: recorder.casts, timeout=30, what="the failover cast")
        time.sleep(1.5)
        assert recorder.casts == [amphora]
        with engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT provisioning_status FROM load_balancer")).scalar()
                == "PENDING_UPDATE"
            )
        done = run("healthmgr failover list --config /etc/healthmgr/healthmgr.toml -f json", paths)
        assert done.returncode == 0, done.stderr
        assert [(r["amphora_id"], r["state"]) for r in json.loads(done.stdout)] == [
            (amphora, "PENDING")
        ]
    finally:
        code = daemon.stop()
        engine.dispose()
    assert code == 0
    assert next(commands, None) is None  # every command of the guide was run

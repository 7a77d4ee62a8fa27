"""Judgment under database faults at the issue's scale: false failovers, measured.

Opt-in benchmark (prints one JSON object per scenario), the large versions of
tests/manager/test_daemon_cutoff.py on PostgreSQL and MariaDB:

* ``cutoff`` (issue 7, case 1): two managers share the database, the
  amphorae send to manager A only, A's connection is blackholed for
  ``--fault`` seconds; counts failovers of live amphorae (by any manager) and
  whether the one amphora that really died was failed over, once.
* ``rowlock`` (case 8): another session holds ``SELECT ... FOR UPDATE`` on
  one live amphora's health row for ``--fault`` seconds under one manager;
  counts false failovers and the time from the release to the next flush.
* ``blackhole`` (case 8): the manager's own connection is blackholed;
  false failovers after the restore, and when the manager said it was
  impaired.

    .venv/bin/python tests/bench/judgment.py --databases postgresql,mysql \\
        --amphorae 300 --fault 30 --timeout 10 --interval 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import sqlalchemy as sa

from healthmgr.chaos.relay import Relay
from healthmgr.db.engine import make_engine
from healthmgr.wire.ids import id_str
from tests.conftest import fresh_database_url
from tests.db.factories import make_fleet
from tests.fault.conftest import server_address, through
from tests.manager.conftest import agent_for, migrated_engine
from tests.manager.harness import Beater, start_daemon, write_config


def config(path: Path, url: str, manager: str, args: argparse.Namespace) -> Path:
    return write_config(
        path,
        url,
        sections={
            "health_manager": {
                "heartbeat_interval": args.interval,
                "heartbeat_timeout": args.timeout,
                "health_check_interval": min(3.0, args.timeout / 4),
                "manager_id": manager,
                "sock_rlimit": 8 << 20,
            },
            "database": {"timeout": args.db_timeout},
        },
    )


def requests(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT amphora_id FROM failover_request")]


def reported(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM amphora_health").scalar_one())


def wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def cutoff(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    engine = migrated_engine(url)
    fleet = make_fleet(engine, args.amphorae + 10, with_health=False)
    a_agents = [agent_for(s) for s in fleet[: args.amphorae]]
    b_agents = [agent_for(s) for s in fleet[args.amphorae :]]
    with Relay(server_address(url)) as relay:
        a = start_daemon(config(work / "a.toml", through(url, relay.address), "hm-a", args))
        b = start_daemon(config(work / "b.toml", url, "hm-b", args))
        try:
            with Beater([a], a_agents, args.interval) as to_a, Beater([b], b_agents, args.interval):
                wait(lambda: reported(engine) == len(fleet), 60)
                time.sleep(args.timeout + 2)
                dead = a_agents[7]
                to_a.remove(dead)
                time.sleep(args.interval)
                relay.blackhole()
                time.sleep(args.fault)
                during = requests(engine)
                relay.passthrough()
                wait(lambda: id_str(dead.amphora) in requests(engine), 4 * args.timeout + 30)
                time.sleep(args.timeout)
                after = requests(engine)
                deferred = b.metric(
                    "healthmgr_failover_verdicts_total",
                    verdict="defer",
                    reason="observer_unreachable",
                )
        finally:
            for d in (a, b):
                d.stop()
            engine.dispose()
    live_failed = [x for x in after if x != id_str(dead.amphora)]
    return {
        "scenario": "cutoff",
        "amphorae_sending_to_a": args.amphorae,
        "blackhole_seconds": args.fault,
        "failovers_during_fault": len(during),
        "false_failovers": len(live_failed),
        "dead_failed_over": after.count(id_str(dead.amphora)),
        "deferred_by_b": deferred,
    }


def rowlock(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    engine = migrated_engine(url)
    fleet = make_fleet(engine, args.amphorae, with_health=False)
    agents = [agent_for(s) for s in fleet]
    daemon = start_daemon(config(work / "hm.toml", url, "hm-a", args))
    locker = make_engine(url)
    try:
        with Beater([daemon], agents, args.interval):
            wait(lambda: reported(engine) == len(fleet), 60)
            time.sleep(args.timeout + 2)
            held, done = threading.Event(), threading.Event()

            def hold() -> None:
                with locker.connect() as conn, conn.begin():
                    conn.execute(
                        sa.text("SELECT * FROM amphora_health WHERE amphora_id = :a FOR UPDATE"),
                        {"a": id_str(agents[0].amphora)},
                    )
                    held.set()
                    done.wait(args.fault)

            thread = threading.Thread(target=hold, daemon=True)
            thread.start()
            held.wait(10)
            thread.join(args.fault + 30)
            released = time.time()
            back = None
            if wait(
                lambda: any(
                    e.get("event") == "database is back; pending writes flushed"
                    for e in daemon.events()
                ),
                30,
            ):
                back = daemon.log_time("database is back; pending writes flushed")
            time.sleep(args.timeout * 2)
            failed = requests(engine)
            flush_failures = daemon.metric("healthmgr_flush_failures_total")
    finally:
        daemon.stop()
        locker.dispose()
        engine.dispose()
    return {
        "scenario": "rowlock",
        "amphorae": args.amphorae,
        "lock_seconds": args.fault,
        "false_failovers": len(failed),
        "flush_failures": flush_failures,
        "recovered_after_release_s": None if back is None else round(back - released, 2),
    }


def blackhole(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    engine = migrated_engine(url)
    fleet = make_fleet(engine, args.amphorae, with_health=False)
    agents = [agent_for(s) for s in fleet]
    with Relay(server_address(url)) as relay:
        daemon = start_daemon(config(work / "hm.toml", through(url, relay.address), "hm-a", args))
        try:
            with Beater([daemon], agents, args.interval):
                wait(lambda: reported(engine) == len(fleet), 60)
                time.sleep(args.timeout + 2)
                relay.blackhole()
                started = time.time()
                wait(lambda: daemon.metric("healthmgr_impaired") == 1, 60)
                impaired_after = time.time() - started
                time.sleep(max(0.0, args.fault - impaired_after))
                relay.passthrough()
                restored = time.time()
                wait(lambda: daemon.metric("healthmgr_impaired") == 0, 60)
                healthy_after = time.time() - restored
                time.sleep(args.timeout * 2)
                failed = requests(engine)
        finally:
            daemon.stop()
            engine.dispose()
    return {
        "scenario": "blackhole",
        "amphorae": args.amphorae,
        "blackhole_seconds": args.fault,
        "impaired_after_s": round(impaired_after, 2),
        "healthy_after_restore_s": round(healthy_after, 2),
        "false_failovers": len(failed),
    }


SCENARIOS = {"cutoff": cutoff, "rowlock": rowlock, "blackhole": blackhole}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--databases", default="postgresql,mysql")
    p.add_argument("--scenarios", default="cutoff,rowlock,blackhole")
    p.add_argument("--amphorae", type=int, default=157)
    p.add_argument("--fault", type=float, default=30.0, help="seconds the fault lasts")
    p.add_argument("--timeout", type=float, default=10.0, help="heartbeat_timeout")
    p.add_argument("--interval", type=float, default=1.0, help="heartbeat_interval")
    p.add_argument("--db-timeout", type=float, default=2.0, help="[database] timeout")
    args = p.parse_args()
    for dialect in args.databases.split(","):
        for name in args.scenarios.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                url, drop = fresh_database_url(dialect, Path(tmp))
                try:
                    result = SCENARIOS[name](url, Path(tmp), args)
                finally:
                    drop()
            print(json.dumps({"database": dialect, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

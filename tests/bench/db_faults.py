"""How long a database call waits under each network fault, with and without the bounds.

For PostgreSQL and MariaDB, for each kind of engine (tests/fault/db_client.py:
``plain`` = the drivers' defaults, ``keepalive`` = only the libpq TCP
parameters of healthmgr.db.engine.Bounds, ``product`` = make_engine(url,
timeout=T)) and each fault, one connection is opened, the fault is made, and
the seconds from the fault to the error are reported as JSON (``blocked``
when still waiting after --limit seconds):

* ``relay_blackhole``: the relay swallows every byte; its kernel acknowledges
  them (a frozen server, a stuck proxy);
* ``partition_before_send``: packets dropped (a network namespace whose link
  is cut, healthmgr/chaos/netns.py), then the query is sent: unacknowledged data;
* ``partition_awaiting_reply``: the query (a 30 s sleep) is sent and
  acknowledged, then the link is cut: nothing outstanding, the client waits.

    sudo .venv/bin/python tests/bench/db_faults.py [--timeout 1] [--limit 15]

Needs root (network namespaces), PostgreSQL and MariaDB (tests/conftest.py).
Blocked cases take --limit seconds each: about three minutes in all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository

from healthmgr.chaos.netns import LinkedNamespace, linked_namespace  # noqa: E402
from healthmgr.chaos.relay import Relay  # noqa: E402
from tests.conftest import fresh_database_url  # noqa: E402
from tests.fault.conftest import server_address, through  # noqa: E402

SLEEP = {"postgresql": "SELECT pg_sleep(30)", "mysql": "SELECT SLEEP(30)"}
FAULTS = ("relay_blackhole", "partition_before_send", "partition_awaiting_reply")


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the client process died")
    return json.loads(line)


def _send(proc: subprocess.Popen[str], sql: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(sql + "\n")
    proc.stdin.flush()
    _read(proc)  # {"sending": true}


@contextlib.contextmanager
def _client(
    url: str, engine: str, timeout: float, ns: LinkedNamespace | None
) -> Iterator[tuple[subprocess.Popen[str], Relay]]:
    listen = (ns.host_ip, 0) if ns else ("127.0.0.1", 0)
    with Relay(server_address(url), listen=listen) as relay:
        argv = [
            sys.executable,
            "-m",
            "tests.fault.db_client",
            through(url, relay.address),
            "--timeout",
            str(timeout),
            "--engine",
            engine,
        ]
        pipes: dict[str, Any] = dict(cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc = ns.popen(argv, **pipes) if ns else subprocess.Popen(argv, text=True, **pipes)
        try:
            _read(proc)  # {"ready": true}
            yield proc, relay
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def run_case(
    url: str, dialect: str, engine: str, fault: str, timeout: float, limit: float
) -> dict[str, Any]:
    ns_cm = contextlib.nullcontext() if fault == "relay_blackhole" else linked_namespace()
    with ns_cm as ns, _client(url, engine, timeout, ns) as (proc, relay):
        if fault == "relay_blackhole":
            relay.blackhole()
            start = time.monotonic()
            _send(proc, "SELECT 1")
        elif fault == "partition_before_send":
            assert ns is not None
            ns.cut()
            start = time.monotonic()
            _send(proc, "SELECT 1")
        else:
            assert ns is not None
            _send(proc, SLEEP[dialect])
            time.sleep(0.5)  # sent and acknowledged
            ns.cut()
            start = time.monotonic()
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            return {"outcome": "blocked", "seconds": f">{limit:g}"}
        result = json.loads(out.splitlines()[0])
        return {
            "outcome": "error" if not result["ok"] else "ok",
            "seconds": round(time.monotonic() - start, 2),
            "error_class": result.get("error_class"),
            "reason": result.get("reason"),
            "error": (result.get("error") or "")[:120],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=1.0, help="[database] timeout")
    parser.add_argument("--limit", type=float, default=15.0, help="seconds before 'blocked'")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for dialect in ("postgresql", "mysql"):
            url, drop = fresh_database_url(dialect, Path(tmp))
            try:
                engines = (
                    ("plain", "keepalive", "product")
                    if dialect == "postgresql"
                    else ("plain", "product")
                )
                for engine in engines:
                    for fault in FAULTS:
                        case = run_case(url, dialect, engine, fault, args.timeout, args.limit)
                        row = {"dialect": dialect, "engine": engine, "fault": fault} | case
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        results.append(row)
            finally:
                drop()
    print(json.dumps({"timeout": args.timeout, "limit": args.limit, "cases": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

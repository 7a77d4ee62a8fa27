"""A database client driven over stdin/stdout, for fault tests that need it in another process.

    python -m tests.fault.db_client URL --timeout 1 [--engine product|keepalive|plain]

Connects and prints ``{"ready": true}``. Then, for each SQL line read from
stdin: prints ``{"sending": true}`` just before it executes the statement,
and then ``{"ok": ..., "elapsed": s, "error": ..., "error_class": ...,
"reason": ...}``. On the connection opened at start, so that a test can
choose whether a fault comes before or after the query is sent.

Engines: ``product`` is ``make_engine(url, timeout=T)``; ``keepalive`` only
the libpq TCP parameters of :class:`healthmgr.db.engine.Bounds` (no client
deadline, no server statement timeout): what the kernel alone bounds;
``plain`` the drivers' defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

import sqlalchemy as sa

from healthmgr.db.engine import Bounds, make_engine, normalize_url
from healthmgr.db.errors import diagnose


def engine_for(url: str, kind: str, timeout: float) -> sa.Engine:
    if kind == "product":
        return make_engine(url, timeout=timeout)
    if kind == "keepalive":
        args = Bounds(timeout).postgresql() | {"options": "-c statement_timeout=0"}
        return sa.create_engine(normalize_url(url), connect_args=args)
    return sa.create_engine(normalize_url(url))


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--engine", choices=("product", "keepalive", "plain"), default="product")
    args = parser.parse_args()
    engine = engine_for(args.url, args.engine, args.timeout)
    conn = engine.connect()
    conn.exec_driver_sql("SELECT 1")
    conn.commit()
    _say({"ready": True})
    for line in sys.stdin:
        _say({"sending": True})
        start = time.monotonic()
        try:
            conn.exec_driver_sql(line.strip())
            conn.commit()
            result: dict[str, Any] = {"ok": True}
        except Exception as e:  # reported to the test, which judges it
            found = diagnose(e)
            with contextlib.suppress(Exception):  # the connection may be gone
                conn.rollback()
            result = {
                "ok": False,
                "error": " ".join(str(e).split())[:300],
                "error_class": str(found.error_class),
                "reason": found.reason,
            }
        result["elapsed"] = round(time.monotonic() - start, 3)
        _say(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

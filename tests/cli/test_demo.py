"""scripts/demo.py end to end: real HAProxy, real manager and agent, real signals.

The demo takes about 15 s; the interrupt test about 5 s.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"


def demo_cmd(*args: str) -> list[str]:
    return [sys.executable, str(DEMO), *args]


def work_dir(output: str) -> Path:
    found = re.search(r"work directory (/\S+)", output)
    assert found, output
    return Path(found.group(1))


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (the demo's children do)."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            hits.append(f"{entry.name}: {cmdline}")
    return hits


def traffic(output: str) -> list[list[str]]:
    """The answers of each 'GET ... -> a, b, c' line, in order."""
    return [line.split("-> ", 1)[1].split(", ") for line in output.splitlines() if " x" in line
            and "GET http://127.0.0.1:" in line]  # fmt: skip


@pytest.mark.haproxy
def test_demo_runs_the_seed_scenario(haproxy_bin: str) -> None:
    done = subprocess.run(
        demo_cmd("--haproxy", haproxy_bin),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert "demo OK in" in out

    # Round robin before, web-1 only after web-2 is killed.
    before, after = traffic(out)
    assert set(before) == {"web-1", "web-2"}
    assert before[:2] in (["web-1", "web-2"], ["web-2", "web-1"])
    assert set(after) == {"web-1"}

    # The trees, drawn by `healthmgr status show`: all ONLINE, then web-2 ERROR with pool
    # and LB DEGRADED (each line: the object, its provisioning and operating status).
    online, degraded = out.split("6. Kill web-2")
    tree = online.split("5. Status tree")[1]
    assert "$ healthmgr status show lb1 --config healthmgr.toml" in tree
    assert re.search(r"load balancer lb1\s+ACTIVE\s+ONLINE", tree)
    assert re.search(r"└── listener listener1 HTTP:\d+\s+ACTIVE\s+ONLINE", tree)
    assert re.search(r"└── pool pool1 ROUND_ROBIN\s+ACTIVE\s+ONLINE", tree)
    assert re.search(r"├── health monitor hm1 HTTP\s+ACTIVE\s+ONLINE", tree)
    assert re.search(r"├── member web-1 \S+\s+ACTIVE\s+ONLINE", tree)
    assert re.search(r"└── member web-2 \S+\s+ACTIVE\s+ONLINE", tree)
    tree = degraded.split("7. Kill the amphora")[0]
    assert re.search(r"load balancer lb1\s+ACTIVE\s+DEGRADED", tree)
    assert re.search(r"pool pool1 ROUND_ROBIN\s+ACTIVE\s+DEGRADED", tree)
    assert re.search(r"member web-1 \S+\s+ACTIVE\s+ONLINE", tree)
    assert re.search(r"member web-2 \S+\s+ACTIVE\s+ERROR", tree)
    assert re.search(r"member web-2 ERROR, pool and load balancer DEGRADED after [\d.]+ s", tree)

    # The failover of the killed amphora, recorded for the API's worker.
    failover = out.split("7. Kill the amphora")[1]
    assert re.search(r"failover requested [\d.]+ s after the kill", failover)
    assert re.search(r"reason\s+heartbeat_timeout", failover)
    assert re.search(r"requested_by\s+demo-manager", failover)
    assert re.search(r"state\s+PENDING", failover)
    assert "amphora_health: busy = True" in failover

    # Clean shutdown: the manager exits 0 on SIGTERM, nothing is left behind.
    assert re.search(r"\(manager\) -> exit status 0", out)
    workdir = work_dir(out)
    assert not workdir.exists()
    assert processes_using(workdir) == []


@pytest.mark.haproxy
def test_ctrl_c_stops_every_process(haproxy_bin: str) -> None:
    proc = subprocess.Popen(
        demo_cmd("--haproxy", haproxy_bin),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        seen = _read_until(proc, "4. Traffic", timeout=30)
        workdir = work_dir(seen)
        assert processes_using(workdir), "HAProxy, manager and agent should be running"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen + rest + err
    assert "demo interrupted" in err
    assert processes_using(workdir) == []
    assert not workdir.exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_python_dropped_ends_the_next_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler's exception raised while a __del__ runs is printed and dropped by Python:
    the demo ran on to its end after a Ctrl-C in CI. The signal is recorded, so the next
    wait raises it again."""
    spec = importlib.util.spec_from_file_location("demo_under_test", DEMO)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, demo)  # its dataclasses look it up
    spec.loader.exec_module(demo)  # a module of its own: RECEIVED starts empty

    class SignalledWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs here; its exception goes nowhere
                pass

    with demo.signals_interrupt():
        SignalledWhileCollected()  # dropped at once: __del__ runs, nothing is raised here
        assert demo.RECEIVED == ["SIGINT"]
        with pytest.raises(demo.Interrupted):
            demo.poll(lambda: None, 0.5, "a condition that never comes")


def test_missing_haproxy_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "no-haproxy"
    done = subprocess.run(
        demo_cmd("--haproxy", str(missing)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"demo FAILED: --haproxy: {missing} is not an executable file"


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """stdout of ``proc`` up to the line holding ``marker`` (a thread reads, we wait)."""
    lines: queue.Queue[str] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
            if marker in line:
                return

    threading.Thread(target=reader, daemon=True).start()
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in:\n{seen}"
        try:
            seen += lines.get(timeout=remaining)
        except queue.Empty:
            continue
    return seen

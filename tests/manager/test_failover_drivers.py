"""Failover drivers with real processes, the retry loop, and entry point lookup."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import trio

from healthmgr.config import ConfigError, Settings, load_settings
from healthmgr.db.claims import Claim
from healthmgr.manager.dbcall import DbCalls
from healthmgr.manager.failover import (
    DriverResult,
    ExecDriver,
    FailoverFailed,
    FailoverJob,
    RecordDriver,
    load_driver,
    run_with_retries,
)
from healthmgr.manager.metrics import Metrics
from healthmgr.manager.runner import FailoverRunner, RunnerSettings

JOB = FailoverJob(
    amphora_id="amp-1", load_balancer_id="lb-1", reason="heartbeat_timeout", request_id=42
)


def exec_settings(command: list[str], timeout: float = 5.0) -> Settings:
    return load_settings(
        None,
        env={
            "HEALTHMGR_FAILOVER__DRIVER": "exec",
            "HEALTHMGR_FAILOVER__COMMAND": json.dumps(command),
            "HEALTHMGR_FAILOVER__TIMEOUT": str(timeout),
        },
    )


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "failover.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def test_record_driver_hands_off() -> None:
    assert await RecordDriver(load_settings(None, env={})).run(JOB) is DriverResult.HANDED_OFF


async def test_exec_driver_runs_the_command_with_the_job(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    cmd = script(tmp_path, f'echo "$1 $2 $3 $4 $HEALTHMGR_FAILOVER_REQUEST_ID" >> {out}\n')
    driver = ExecDriver(
        exec_settings([cmd, "{amphora_id}", "{load_balancer_id}", "{reason}", "try-{attempt}"])
    )
    assert await driver.run(JOB) is DriverResult.SUCCEEDED
    no_lb = FailoverJob("amp-2", None, "listener count", 43, attempt=2)
    assert await driver.run(no_lb) is DriverResult.SUCCEEDED
    assert out.read_text().splitlines() == [
        "amp-1 lb-1 heartbeat_timeout try-1 42",
        "amp-2  listener count try-2 43",  # no load balancer: empty argument
    ]


async def test_exec_driver_no_shell_interpretation(tmp_path: Path) -> None:
    out = tmp_path / "arg"
    cmd = script(tmp_path, f'printf %s "$1" > {out}\n')
    evil = FailoverJob("x; touch pwned", None, "$(id)", 1)
    await ExecDriver(exec_settings([cmd, "{amphora_id} {reason}"])).run(evil)
    assert out.read_text() == "x; touch pwned $(id)"
    assert not (tmp_path / "pwned").exists()


async def test_exec_failure_carries_the_stderr_tail(tmp_path: Path) -> None:
    cmd = script(tmp_path, 'yes noise | head -c 100000 >&2; echo "nova said no" >&2; exit 3\n')
    with pytest.raises(FailoverFailed) as info:
        await ExecDriver(exec_settings([cmd])).run(JOB)
    message = info.value.message
    assert "exit status 3" in message and message.endswith("nova said no")
    assert len(message) < 2200

    with pytest.raises(FailoverFailed, match=r"^false failed \(exit status 1\)$"):
        await ExecDriver(exec_settings(["false"])).run(JOB)
    with pytest.raises(FailoverFailed, match="cannot run /nonexistent/failover: No such file"):
        await ExecDriver(exec_settings(["/nonexistent/failover"])).run(JOB)


async def test_exec_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The script starts a child and waits: both must be gone after the timeout.
    cmd = script(tmp_path, f"sleep 10 & echo $! > {pidfile}\necho started >&2\nwait\n")
    with pytest.raises(FailoverFailed, match=r"timed out after 0.3s: started"):
        await ExecDriver(exec_settings([cmd], timeout=0.3)).run(JOB)
    child = int(pidfile.read_text())
    with trio.fail_after(5):
        while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
            await trio.sleep(0.02)

    with pytest.raises(FailoverFailed, match=r"^sleep timed out after 0.2s$"):
        await ExecDriver(exec_settings(["sleep", "10"], timeout=0.2)).run(JOB)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return "Z"


async def test_exec_success_does_not_wait_for_background_children(tmp_path: Path) -> None:
    cmd = script(tmp_path, "sleep 3 &\nexit 0\n")
    with trio.fail_after(2):
        assert await ExecDriver(exec_settings([cmd], timeout=5)).run(JOB) is DriverResult.SUCCEEDED


async def test_cancellation_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    cmd = script(tmp_path, f"echo $$ > {pidfile}\nexec sleep 10\n")
    driver = ExecDriver(exec_settings([cmd], timeout=30))
    with trio.move_on_after(0.3) as scope:
        await driver.run(JOB)
    assert scope.cancelled_caught
    assert _state(int(pidfile.read_text())) == "Z"


class Flaky:
    name = "flaky"

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error
        self.jobs: list[FailoverJob] = []

    async def run(self, job: FailoverJob) -> DriverResult:
        self.jobs.append(job)
        if len(self.jobs) <= self.failures:
            raise self.error or FailoverFailed(f"attempt {job.attempt} failed")
        return DriverResult.SUCCEEDED


async def test_retries_until_success_with_exponential_backoff(autojump_clock: object) -> None:
    driver = Flaky(failures=2)
    seen: list[tuple[int, str | None, float]] = []

    async def on_attempt(attempt: int, error: Exception | None) -> None:
        seen.append((attempt, str(error) if error else None, trio.current_time()))

    start = trio.current_time()
    result = await run_with_retries(driver, JOB, max_attempts=3, backoff=1.0, on_attempt=on_attempt)
    assert result is DriverResult.SUCCEEDED
    assert [j.attempt for j in driver.jobs] == [1, 2, 3]
    assert [(a, e) for a, e, _ in seen] == [
        (1, "attempt 1 failed"),
        (2, "attempt 2 failed"),
        (3, None),
    ]
    assert [round(t - start, 6) for _, _, t in seen] == [0, 1.0, 3.0]  # virtual time


async def test_raises_the_last_failure_after_the_last_attempt(autojump_clock: object) -> None:
    driver = Flaky(failures=10)
    with pytest.raises(FailoverFailed, match="attempt 4 failed"):
        await run_with_retries(driver, JOB, max_attempts=4, backoff=0.5)
    assert len(driver.jobs) == 4


async def test_a_crashing_driver_is_a_failure_not_a_crash() -> None:
    driver = Flaky(failures=1, error=KeyError("oops"))
    with pytest.raises(FailoverFailed, match="driver 'flaky' crashed: KeyError"):
        await run_with_retries(driver, JOB, max_attempts=1, backoff=0)


async def test_cancellation_during_backoff(autojump_clock: object) -> None:
    driver = Flaky(failures=10)
    with trio.move_on_after(5) as scope:
        await run_with_retries(driver, JOB, max_attempts=5, backoff=100)
    assert scope.cancelled_caught and len(driver.jobs) == 1


def test_entry_points_find_both_drivers(tmp_path: Path) -> None:
    settings = exec_settings(["true"])
    assert isinstance(load_driver("record", settings), RecordDriver)
    driver = load_driver("exec", settings)
    assert isinstance(driver, ExecDriver) and driver.command == ["true"]


def test_unknown_driver_names_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_driver("carrier-pigeon", load_settings(None, env={}))
    assert info.value.problems == [
        "failover.driver: unknown driver 'carrier-pigeon' (available: exec, octavia, record)"
    ]


def test_exec_without_command_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"failover\.command"):
        ExecDriver(load_settings(None, env={}))


class _InlineDb(DbCalls):
    async def run(self, fn, *args):  # no thread: the mock clock stays in charge
        return fn(*args)


def _runner(store: object, driver: object, threads: int = 4, attempts: int = 1) -> FailoverRunner:
    return FailoverRunner(
        store,  # type: ignore[arg-type]
        driver,
        Metrics(process=False),
        RunnerSettings("hm-1", threads, attempts, 0.0, 30.0),
        _InlineDb(),
    )


async def test_runner_records_an_outcome_until_the_database_takes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The outcome write is retried (0.5, 1, 2, 5, 5 ... s) through errors, never dropped."""
    calls: list[float] = []

    class FlakyStore:
        def record_outcome(self, claim, manager, state, attempts, error=None) -> bool:
            calls.append(trio.current_time())
            if len(calls) < 4:
                raise OSError("database unreachable")
            return True

    runner = _runner(FlakyStore(), None, threads=1, attempts=3)
    claim = Claim(b"\x01" * 16, b"\x02" * 16, request_id=42)
    await runner._record(claim, JOB, "SUCCEEDED", 1, None)
    assert len(calls) == 4
    assert [round(b - a, 3) for a, b in itertools.pairwise(calls)] == [0.5, 1.0, 2.0]


class _GatedDriver:
    """Runs each job until its gate opens; counts its closes."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.jobs: list[int] = []
        self.closed = 0

    async def run(self, job: FailoverJob) -> DriverResult:
        self.jobs.append(job.request_id)
        await self.gate.wait()
        return DriverResult.SUCCEEDED

    def close(self) -> None:
        self.closed += 1


class _AcceptingStore:
    def __getattr__(self, name: str):  # every write succeeds
        return lambda *args, **kwargs: True


async def test_a_replaced_driver_is_closed_when_its_last_job_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reload swaps the driver: running jobs finish on the old one, which is
    closed then (not leaked, not closed under them); shutdown closes the new one."""
    old, new = _GatedDriver(), _GatedDriver()
    runner = _runner(_AcceptingStore(), old)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        runner.start(Claim(b"\x01" * 16, None, request_id=1))
        await trio.testing.wait_all_tasks_blocked()
        runner.replace_driver(new)
        runner.start(Claim(b"\x02" * 16, None, request_id=2))
        await trio.testing.wait_all_tasks_blocked()
        assert (old.jobs, new.jobs) == ([1], [2])
        assert old.closed == 0
        old.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert runner.in_flight == 1
        assert (old.closed, new.closed) == (1, 0)
        new.gate.set()
        await runner.wait_idle()
        assert new.closed == 0
        nursery.cancel_scope.cancel()
    assert (old.closed, new.closed) == (1, 1)


async def test_a_driver_replaced_while_idle_is_closed_at_once() -> None:
    old, new = _GatedDriver(), _GatedDriver()
    runner = _runner(_AcceptingStore(), old)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        runner.replace_driver(new)
        assert (old.closed, new.closed) == (1, 0)
        nursery.cancel_scope.cancel()
    assert (old.closed, new.closed) == (1, 1)

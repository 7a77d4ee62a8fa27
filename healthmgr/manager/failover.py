"""Failover drivers: what the health checker does with a stale amphora.

A driver is any object with ``async def run(job) -> DriverResult`` that raises
:class:`FailoverFailed` when the failover did not happen. Drivers are found by
name among the entry points in group ``healthmgr.failover_drivers`` and built
with the settings: ``record`` and ``exec`` ship here; a deployment adds its
own by declaring an entry point.

The checker owns the bookkeeping (the claim, the request row, metrics, the
load balancer going to ERROR after the last attempt); drivers only act.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog
import tenacity
import trio

from healthmgr.config import FAILOVER_DRIVER_GROUP, ConfigError, available_failover_drivers
from healthmgr.manager.exec_guard import CANNOT_RUN

if TYPE_CHECKING:
    from healthmgr.config import Settings

log = structlog.get_logger("healthmgr.failover")

STDERR_TAIL_BYTES = 2048
KILL_GRACE_SECONDS = 2.0
STDERR_DRAIN_SECONDS = 0.2


@dataclasses.dataclass(frozen=True, slots=True)
class FailoverJob:
    amphora_id: str
    load_balancer_id: str | None
    reason: str
    request_id: int
    attempt: int = 1


class DriverResult(enum.Enum):
    HANDED_OFF = "handed_off"  # the request row stays PENDING for the API's worker
    SUCCEEDED = "succeeded"  # the driver did the failover itself
    # Nothing done, and rightly so (the load balancer is immutable: the API's
    # worker is changing it): the claim is given back (ABANDONED, not busy).
    SKIPPED = "skipped"


class FailoverFailed(Exception):
    """The failover did not happen; ``message`` says why (it goes to the log and the row)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@runtime_checkable
class Driver(Protocol):
    name: str

    async def run(self, job: FailoverJob) -> DriverResult: ...


def close_driver(driver: object) -> None:
    """Release what a driver holds (connections, transports), if it says how:
    a driver may define ``close()``; the runner calls it once no job uses it."""
    close = getattr(driver, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # a driver's bug must not stop a reload or a shutdown
        log.warning("failover driver did not close cleanly", error=repr(exc))


class RecordDriver:
    """Leaves the failover to the API's worker: the request row the checker wrote is the job."""

    name = "record"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    async def run(self, job: FailoverJob) -> DriverResult:
        return DriverResult.HANDED_OFF


class ExecDriver:
    """Runs ``[failover] command`` (no shell) with the job's ids, bounded by ``timeout``.

    Exit status 0 is success. The command runs in its own process group, so a
    timeout or a shutdown ends the children it started too, and under
    :mod:`healthmgr.manager.exec_guard`, so it never outlives a manager that
    dies (SIGKILL): the manager that takes the lease over runs it again, so the
    command must be idempotent (docs/operations.md, "The driver contract").
    """

    name = "exec"

    def __init__(self, settings: Settings) -> None:
        command = list(settings.failover.command)
        if not command:
            raise ConfigError(['failover.command: required by driver = "exec"'])
        self.command = command
        self.timeout = settings.failover.timeout

    def argv(self, job: FailoverJob) -> list[str]:
        values = _job_values(job)
        return [arg.format_map(values) for arg in self.command]

    async def run(self, job: FailoverJob) -> DriverResult:
        argv = self.argv(job)
        env = {
            **os.environ,
            **{f"HEALTHMGR_FAILOVER_{k.upper()}": v for k, v in _job_values(job).items()},
        }
        guarded = [
            sys.executable,
            "-m",
            "healthmgr.manager.exec_guard",
            str(os.getpid()),
            "--",
            *argv,
        ]
        try:
            returncode, stderr_tail = await _run(guarded, env, self.timeout)
        except OSError as exc:
            raise FailoverFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        tail = stderr_tail.decode("utf-8", "replace").strip()
        if returncode == CANNOT_RUN and tail.startswith("cannot run "):
            raise FailoverFailed(tail)
        detail = f": {tail}" if tail else ""
        if returncode is None:
            raise FailoverFailed(f"{argv[0]} timed out after {self.timeout:g}s{detail}")
        if returncode != 0:
            status = (
                f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
            )
            raise FailoverFailed(f"{argv[0]} failed ({status}){detail}")
        return DriverResult.SUCCEEDED


def _job_values(job: FailoverJob) -> dict[str, str]:
    return {
        "amphora_id": job.amphora_id,
        "load_balancer_id": job.load_balancer_id or "",
        "reason": job.reason,
        "attempt": str(job.attempt),
        "request_id": str(job.request_id),
    }


async def _run(argv: list[str], env: Mapping[str, str], timeout: float) -> tuple[int | None, bytes]:
    """(exit status, or None if it ran past ``timeout``; last bytes of stderr).

    A timeout or a cancellation kills the command's whole process group. Raises
    OSError when the command cannot be started.
    """
    tail = _Tail(STDERR_TAIL_BYTES)
    start_error: OSError | None = None
    returncode: int | None = None
    async with trio.open_nursery() as nursery:
        try:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    check=False,
                    env=env,
                    start_new_session=True,
                    deliver_cancel=_kill_group,
                )
            )
        except OSError as exc:
            start_error = exc  # raised below, outside the nursery, as itself
        else:
            reader = trio.CancelScope()
            nursery.start_soon(tail.read_all, process.stderr, reader)
            with trio.move_on_after(timeout):
                await process.wait()
                returncode = process.returncode
            if returncode is None:
                nursery.cancel_scope.cancel()  # run_process kills the group (_kill_group)
            else:
                # A background child that inherited stderr must not hold us past the exit.
                with trio.move_on_after(STDERR_DRAIN_SECONDS):
                    await tail.done.wait()
                reader.cancel()
    if start_error is not None:
        raise start_error
    return returncode, tail.value()


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.done = trio.Event()

    async def read_all(self, stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
        try:
            with scope:
                async for chunk in stream:
                    self.chunks.append(chunk)
                    self.size += len(chunk)
                    while self.size - len(self.chunks[0]) >= self.limit:
                        self.size -= len(self.chunks.popleft())
        finally:
            self.done.set()

    def value(self) -> bytes:
        return b"".join(self.chunks)[-self.limit :]


async def _kill_group(process: trio.Process) -> None:
    """SIGTERM the whole group, then SIGKILL it if it has not gone after a grace period."""
    _signal_group(process, signal.SIGTERM)
    with trio.move_on_after(KILL_GRACE_SECONDS):
        await process.wait()
        return
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: trio.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def load_driver(name: str, settings: Settings) -> Driver:
    """Build the driver named ``name`` (an entry point in ``healthmgr.failover_drivers``).

    Raises ConfigError naming the available drivers when there is no such name.
    """
    found = entry_points(group=FAILOVER_DRIVER_GROUP, name=name)
    if not found:
        names = ", ".join(available_failover_drivers()) or "none"
        raise ConfigError([f"failover.driver: unknown driver {name!r} (available: {names})"])
    (entry,) = tuple(found)[:1]
    try:
        factory: Any = entry.load()
        driver = factory(settings)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            [f"failover.driver: cannot load {name!r} ({entry.value}): {exc!r}"]
        ) from exc
    if not isinstance(driver, Driver):
        raise ConfigError([f"failover.driver: {entry.value} does not provide async run(job)"])
    return driver


OnAttempt = Callable[[int, "Exception | None"], Awaitable[None]]


async def run_with_retries(
    driver: Driver,
    job: FailoverJob,
    *,
    max_attempts: int,
    backoff: float,
    on_attempt: OnAttempt | None = None,
    max_backoff: float = 300.0,
) -> DriverResult:
    """Run ``driver`` up to ``max_attempts`` times, sleeping backoff, 2*backoff, ... between.

    ``on_attempt(attempt, error)`` is awaited after every attempt (error None on
    success). Raises the last FailoverFailed after the last attempt. Cancellation
    (shutdown) propagates at once, from the driver or from the sleep.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    async def attempt(number: int) -> DriverResult:
        try:
            result = await driver.run(dataclasses.replace(job, attempt=number))
        except FailoverFailed as exc:
            error = exc
        except Exception as exc:
            # A third-party driver's bug must not take the health checker down.
            error = FailoverFailed(f"driver {getattr(driver, 'name', driver)!r} crashed: {exc!r}")
            error.__cause__ = exc
        else:
            if on_attempt is not None:
                await on_attempt(number, None)
            return result
        if on_attempt is not None:
            await on_attempt(number, error)
        raise error

    async for retry in tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max_attempts),
        retry=tenacity.retry_if_exception_type(FailoverFailed),
        wait=tenacity.wait_exponential(multiplier=backoff, max=max_backoff),
        sleep=trio.sleep,
        reraise=True,
    ):
        with retry:
            return await attempt(retry.retry_state.attempt_number)
    raise AssertionError("unreachable")  # tenacity reraises the last error

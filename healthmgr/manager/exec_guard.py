"""Runs a failover command so that it never outlives the manager that started it.

    python -m healthmgr.manager.exec_guard MANAGER_PID -- COMMAND [ARGS...]

The exec driver starts the command through this guard, in a process group
of its own (so a timeout kills the whole group). If the manager dies
(SIGKILL, a crash), the guard notices within ``POLL`` seconds (its parent
changes) and ends the command's group: a failover whose owner is gone must
not keep running beside the one that takes its lease over. The guard exits
with the command's status (128 + signal when it was killed), and 127 with a
one-line reason when the command cannot be started.

Pure standard library: it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

POLL = 0.05
KILL_GRACE = 2.0
CANNOT_RUN = 127


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: exec_guard MANAGER_PID -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    manager, command = int(argv[0]), argv[2:]
    try:
        pid = os.posix_spawnp(command[0], command, os.environ)
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return CANNOT_RUN
    forward = lambda signum, _frame: _signal_child(pid, signum)  # noqa: E731
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _exit_like(os.waitstatus_to_exitcode(status))
        if os.getppid() != manager:
            return _orphaned(pid)
        time.sleep(POLL)


def _exit_like(code: int) -> int:
    """The command's status; a command killed by a signal kills the guard alike."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _orphaned(pid: int) -> int:
    """The manager is gone: end the command's group, then exit."""
    group = os.getpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _kill(group, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return 128 + signal.SIGTERM
        time.sleep(0.05)
    _kill(group, signal.SIGKILL)
    return 128 + signal.SIGKILL


def _signal_child(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _kill(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""VRRP awareness, as Octavia's amphora agent has it: no keepalived, no heartbeats.

In an ACTIVE_STANDBY pair keepalived moves the VIP between the two amphorae.
An amphora whose keepalived has died cannot take the VIP (or keep it), so it
must stop looking healthy: the agent stops sending, the manager sees the
heartbeats stop and fails the amphora over. Octavia's ``health_daemon``
(``run_sender``) does exactly this: when the keepalived configuration file
exists (Octavia writes it only for ACTIVE_STANDBY), it reads the pid from
keepalived's pid file and sends nothing unless ``kill(pid, 0)`` finds the
process. We do the same, and also treat a zombie (exited, not yet reaped) as
not running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class KeepalivedCheck:
    pid_file: Path
    # When set, the check applies only while this file exists (Octavia's rule).
    config_file: Path | None = None

    def problem(self) -> str | None:
        """None when heartbeats may go out; otherwise why not, in one line.

        Two small file reads and a signal-0 per poll: cheap enough to run in the
        agent's event loop.
        """
        if self.config_file is not None and not self.config_file.is_file():
            return None
        try:
            text = self.pid_file.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return f"keepalived pid file {self.pid_file} is missing"
        except OSError as exc:
            return f"keepalived pid file {self.pid_file}: {exc.strerror or exc}"
        first = text.strip().split("\n", 1)[0].strip()
        if not first.isdigit() or int(first) <= 0:
            return f"keepalived pid file {self.pid_file} holds no pid: {first[:40]!r}"
        pid = int(first)
        if not process_running(pid):
            return f"keepalived (pid {pid} from {self.pid_file}) is not running"
        return None


def process_running(pid: int) -> bool:
    """True when process ``pid`` exists and has not exited (a zombie has)."""
    if pid <= 0:  # kill(0, ...) and kill(-1, ...) address groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists; it belongs to another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False  # reaped between the two checks
    except OSError:
        return True  # no procfs: kill(pid, 0) is all there is
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] not in ("Z", "X")

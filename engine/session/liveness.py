"""Whether a session's writer is alive, from what its meta table says about it.

Why a heartbeat and a pid: a reader must tell a run that is training from one whose process died
without recording an ending (SIGKILL, a lost node), since the stored status of both is "running".
The writer stamps a heartbeat every second; a heartbeat older than ``HEARTBEAT_STALE`` seconds, or
(on the writer's own host) a writer pid that is gone, means the writer died, and the session then
reads as interrupted. A heartbeat from the future (another host's clock) counts as fresh only
within ``FUTURE_SLACK`` seconds, so a dead session never stays "running".
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

from sgdwalk.session.schema import HEARTBEAT_STALE

FUTURE_SLACK = 60.0  # a heartbeat this far in the future is another host's clock, not a live writer


def heartbeat_age(meta: dict[str, Any]) -> float:
    """Seconds since the writer's last heartbeat (inf when unreadable)."""
    try:
        return time.time() - float(meta.get("heartbeat", "nan"))
    except (TypeError, ValueError):
        return math.inf


def local_pid(meta: dict[str, Any]) -> int | None:
    """The writer's process id, when it ran on this host."""
    if meta.get("host") != socket.gethostname():
        return None
    try:
        return int(meta.get("pid", ""))
    except (TypeError, ValueError):
        return None


def alive(meta: dict[str, Any]) -> bool:
    """Whether the writer of a session stored as running is still running it."""
    pid = local_pid(meta)
    if pid is not None and not _pid_alive(pid):
        return False
    return -FUTURE_SLACK < heartbeat_age(meta) < HEARTBEAT_STALE


def started_by(pid: int, deadline: float) -> bool:
    """Whether process ``pid`` started before ``deadline`` (seconds since the epoch; Linux's
    /proc tells): a pid alone could have been reused by an unrelated process since."""
    started = _process_start(pid)
    return started is not None and started <= deadline


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from Linux's /proc; else None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as fh:
            boot = next(float(ln.split()[1]) for ln in fh if ln.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None

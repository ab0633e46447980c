"""The processes a command starts and answers for: stopped within a grace, signals passed on.

Why one place: ``run``'s trainer child, ``run --nproc``'s torchrun and ``exec``'s script must all
end when the command that started them is told to end, and none may keep the command waiting
forever. A stop is asked with a signal (SIGTERM, or the signal this command got); a child that
has not ended ``stop_grace()`` seconds later (``$SGDWALK_STOP_GRACE``, 30 s by default, as
torchrun waits for its own workers), or when the stop is asked a second time (Ctrl+C again), is
killed with SIGKILL together with every process under it (torchrun's ranks run in sessions of
their own, so a process group would not reach them), and a session it left "running" is recorded
as interrupted with the reason. Each step is said in one line on stderr.

A child started for a foreground command (``exec --headless``, ``run --headless --nproc``) gets a
process group of its own, so a Ctrl+C typed in the terminal reaches this command alone and is
passed on once (torchrun's agent, interrupted twice, abandons the shutdown of its workers). A
dashboard's child shares the terminal's group, so only SIGTERM is passed on to it: SIGINT and
SIGHUP come from the terminal, which gave them to the child as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sgdwalk.control import STOP_SIGNALS
from sgdwalk.records import INTERRUPTED
from sgdwalk.session import DB_NAME
from sgdwalk.session.writer import record_ending
from sgdwalk.tui.text import plain
from sgdwalk.values import env_seconds

STOP_GRACE_ENV = "SGDWALK_STOP_GRACE"
DEFAULT_STOP_GRACE = 30.0
NOTICE_AFTER = 10.0  # seconds a stop may take before the command says it is waiting
POLL = 0.1


def stop_grace() -> float:
    """Seconds a child may take to end after a stop is asked (``$SGDWALK_STOP_GRACE``)."""
    return env_seconds(STOP_GRACE_ENV, DEFAULT_STOP_GRACE)


def warn(text: str) -> None:
    """One line on stderr; a terminal that is gone is no error."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(plain(text) + "\n")
        sys.stderr.flush()


def tree(pid: int) -> list[int]:
    """``pid`` and every process under it (Linux's /proc; elsewhere ``pid`` alone)."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{entry.name}/stat") as fh:
                        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                    parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += parents.get(p, [])
    return found


class Owned:
    """A child this command answers for. ``what`` names it in messages; ``session``: the folder
    whose session it writes (recorded as interrupted if the child has to be killed);
    ``own_group``: it leads a process group of its own (stop signals go to the whole group)."""

    def __init__(self, proc: subprocess.Popen[Any], what: str, session: Path | None = None,
                 own_group: bool = False) -> None:  # fmt: skip
        self.proc, self.what, self.session, self.own_group = proc, what, session, own_group
        self.grace = stop_grace()
        self.asked: list[tuple[int, float]] = []  # the stop signals passed on, and when
        self.members: set[int] = set()  # the processes under it, seen when the stop was asked
        self.killed = False

    def ask(self, sig: int = signal.SIGTERM) -> None:
        """Ask the child to stop (the first time), or kill it now (a second time)."""
        self.asked.append((sig, time.monotonic()))
        if len(self.asked) > 1:
            return  # the waiting loop kills it
        self.members.update(tree(self.proc.pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.own_group:
                os.killpg(self.proc.pid, sig)
            elif sig == signal.SIGTERM:  # SIGINT and SIGHUP come from the terminal, which
                os.kill(self.proc.pid, sig)  # gave them to the child's group (ours) already

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Ask the child to stop and wait for it (killing it after the grace); its return code."""
        if self.proc.poll() is None:
            self.ask(sig)
        return self.wait()

    def wait(self) -> int:
        """Wait for the child; while waiting, this process's stop signals are passed on to it."""
        with _passing_on(self):
            told = False
            while True:
                try:
                    return self.proc.wait(timeout=POLL)
                except subprocess.TimeoutExpired:
                    pass
                if not self.asked:
                    continue
                waited = time.monotonic() - self.asked[0][1]
                if len(self.asked) > 1 or waited > self.grace:
                    self._kill()
                elif waited > NOTICE_AFTER and not told:
                    told = True
                    warn(f"sgdwalk: waiting for {self.what} (pid {self.proc.pid}) to stop: up to "
                         f"{self.grace:.0f} s, then it is killed (Ctrl+C again: now)")  # fmt: skip

    def _kill(self) -> None:
        sig = signal.Signals(self.asked[0][0]).name
        why = ("asked to stop twice" if len(self.asked) > 1
               else f"not stopped {self.grace:.0f} s after {sig}")  # fmt: skip
        warn(f"sgdwalk: {self.what} (pid {self.proc.pid}) {why}: killing it and every process "
             "it started (SIGKILL)")  # fmt: skip
        for pid in self.members | set(tree(self.proc.pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.killed = True
        if self.session is not None and settle(self.session, f"killed (SIGKILL): {why}"):
            warn(f"sgdwalk: session {self.session.name} recorded as interrupted")

    def settle(self, why: str) -> bool:
        """After the child ended: its session, still "running", recorded as interrupted."""
        return self.session is not None and settle(self.session, why)


def settle(directory: Path, why: str) -> bool:
    """A session whose writer is gone but which is stored as running, recorded as interrupted
    with ``why`` (so its stored status is true); True when that was needed."""
    return (directory / DB_NAME).is_file() and record_ending(directory / DB_NAME, INTERRUPTED, why)


@contextlib.contextmanager
def _passing_on(owned: Owned):  # type: ignore[no-untyped-def]
    """While the block runs: SIGINT, SIGTERM and SIGHUP reaching this process go to the child."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda sig, _f: owned.ask(sig)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

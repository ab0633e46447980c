"""``sgdwalk run --headless --nproc N``: torchrun in the foreground, quiet, and answered for.

torchrun starts N trainers; rank 0 prints its progress to this terminal and writes the session.
What this command adds around it:
- torchrun runs in a process group of its own (``children.Owned``): Ctrl+C, SIGTERM and SIGHUP
  reaching this command are passed on to it once (its agent passes them to the ranks), a second
  one or the grace's end kills it with every rank, and this command always waits for them; the
  ranks themselves stop when this command is gone (``trainer.Orphaned``).
- Expected endings are one line, not pages: torchrun's and gloo's logging on stderr (the agent's
  ``SignalException`` and ``ChildFailedError`` tracebacks, a lost peer's connection errors) goes to
  ``run.log`` in the session folder, whole; only sgdwalk's own lines (a rank's one-line error)
  reach the terminal, each once. The session's status decides the exit code (torchrun says 1 for
  any rank that did not exit 0, which would call an interrupted run failed).
- Several machines (``--nnodes``) meet within ``rendezvous_timeout()`` seconds, said before the
  wait; a rendezvous that does not complete, or an endpoint that cannot be reached, is one line
  naming the endpoint.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import IO

from sgdwalk import torchrun
from sgdwalk.config import RunConfig
from sgdwalk.errors import EXIT_USAGE, LaunchError, SessionError, exit_code
from sgdwalk.session import DB_NAME, open_session
from sgdwalk.session.naming import release
from sgdwalk.tui.commands.children import Owned, warn
from sgdwalk.tui.commands.trainer import LOG_NAME, child_env, owner_env, trainer_argv

OWN_PREFIX = "sgdwalk: "  # the lines of sgdwalk's own that reach the terminal
ERROR = "sgdwalk: error: "


class QuietLog(threading.Thread):
    """Copies a launcher's stderr into ``log``, passing sgdwalk's own lines on to this stderr
    (each once: every rank says the same bad flag) and keeping the last lines for diagnosis.
    The ranks' error lines are kept in ``errors``: the command says them once, at its end."""

    def __init__(self, stream: IO[bytes], log: Path) -> None:
        super().__init__(name="sgdwalk-torchrun-log", daemon=True)
        self.stream, self.log = stream, log
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.shown: set[str] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        with open(self.log, "ab") as out:
            for raw in iter(self.stream.readline, b""):
                with contextlib.suppress(OSError):
                    out.write(raw)
                    out.flush()
                line = raw.decode(errors="replace").rstrip()
                self.tail.append(line)
                if line.startswith(OWN_PREFIX) and line not in self.shown:
                    self.shown.add(line)
                    if line.startswith(ERROR):
                        self.errors.append(line.removeprefix(ERROR))
                    else:
                        warn(line)

    def saw(self, word: str) -> bool:
        return any(word in line for line in self.tail)

    def rank_code(self, default: int) -> int:
        """The exit code of the first rank that failed, as torchrun's summary says it."""
        for line in self.tail:
            m = re.search(r"exitcode\s*:\s*(-?\d+)", line)
            if m and int(m.group(1)) > 0:
                return int(m.group(1))
        return default


def run_torchrun(cfg: RunConfig) -> int:
    """``run --headless --nproc N`` (or ``--nnodes``): the exit code of the session's ending."""
    from sgdwalk.runner import claim, session_of

    cfg = claim(cfg)
    directory = session_of(cfg)
    if cfg.nnodes is not None:
        warn(f"sgdwalk: waiting for {cfg.nnodes} machines to meet at {cfg.rdzv_endpoint} "
             f"(up to {torchrun.rendezvous_timeout():.0f} s)")  # fmt: skip
    env = os.environ | child_env(cfg) | owner_env()
    proc = subprocess.Popen(trainer_argv(cfg), env=env, stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, process_group=0)  # fmt: skip
    assert proc.stderr is not None
    log = QuietLog(proc.stderr, directory / LOG_NAME)
    log.start()
    owned = Owned(proc, "torchrun", directory, own_group=True)
    code = owned.wait()
    log.join(owned.grace)  # a rank left running (torchrun killed by hand) may hold the pipe
    if (directory / DB_NAME).is_file():
        for line in log.errors:
            warn(ERROR + line)
        return _ended(directory, owned)
    release(directory)
    if owned.asked:
        raise LaunchError("interrupted before rank 0 created the session", 130)
    raise _no_session(cfg, log, code)


def _ended(directory: Path, owned: Owned) -> int:
    """The session's ending, said here (and recorded) when rank 0 could not (it was killed)."""
    unrecorded = owned.settle("rank 0 ended without recording an ending (killed, or it stopped "
                              "answering the others)")  # fmt: skip
    try:
        with open_session(directory) as session:
            status = session.status
    except SessionError as e:
        warn(f"sgdwalk: error: {e}")
        return exit_code("failed")
    if unrecorded or owned.killed:
        warn(f"sgdwalk: {status}: session {directory.name} (rank 0 did not record its ending; "
             f"torchrun's output: {directory / LOG_NAME})")  # fmt: skip
    return exit_code(status)


def _no_session(cfg: RunConfig, log: QuietLog, code: int) -> LaunchError:
    """Why the ranks ended before rank 0 created the session, as one line."""
    where = f"--rdzv-endpoint {cfg.rdzv_endpoint}"
    if log.saw("RendezvousTimeoutError"):
        return LaunchError(f"--nnodes {cfg.nnodes}: not every machine joined at {where} within "
                           f"{torchrun.rendezvous_timeout():.0f} s (start the same command on "
                           "each of them)", EXIT_USAGE)  # fmt: skip
    if log.saw("RendezvousConnectionError") or log.saw("DistNetworkError"):
        return LaunchError(f"cannot reach the rendezvous at {where}: is it this machine or one "
                           "the others reach, and is the port free?", EXIT_USAGE)  # fmt: skip
    if log.errors:  # a rank said why (a dataset that is not there, a batch too large)
        return LaunchError(log.errors[0], log.rank_code(code or 1))
    last = next((ln for ln in reversed(log.tail) if "Error" in ln), "")
    return LaunchError(f"torchrun ended (exit code {code}) before rank 0 created the session"
                       + (f": {last.strip()}" if last else ""), code or 1)  # fmt: skip

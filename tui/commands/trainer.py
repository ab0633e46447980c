"""The trainer child: the headless trainer started for a dashboard, in the background.

The parent claims the session's folder (``sgdwalk.session.naming``) and hands the child its whole
config as data: ``python -m sgdwalk.tui.commands.child`` with ``RunConfig.as_dict()`` as JSON in
``$SGDWALK_CLAIMED_RUN`` (the environment reaches every rank torchrun starts, too), so nothing is
re-parsed from flags. With ``--detach`` the child runs in its own session (``start_new_session``)
so an SSH hang-up never reaches it. Its output goes to ``run.log`` inside the claimed folder; the
parent waits until the session can be opened, then follows it like any other reader. A child
that ends before its session exists gives the folder back, and its last line is the error.

A child that is not detached is told its owner's pid (``$SGDWALK_OWNER``); the trainer stops by
itself, as interrupted, once that command is gone (even killed by SIGKILL) or its own parent is
(torchrun's agent, for a rank), so no run trains on unattended that nobody asked to detach.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sgdwalk import torchrun
from sgdwalk.config import RunConfig, build_config
from sgdwalk.errors import LaunchError, SessionError
from sgdwalk.runner import session_of
from sgdwalk.session import DB_NAME, open_session
from sgdwalk.session.naming import release
from sgdwalk.tui.text import ERROR_PREFIX

CONFIG_ENV = "SGDWALK_CLAIMED_RUN"  # the claimed config, as JSON, for the trainer child
OWNER_ENV = "SGDWALK_OWNER"  # the pid of the command a trainer that is not detached belongs to
CHILD_MODULE = "sgdwalk.tui.commands.child"
START_TIMEOUT = 300.0  # data loading on a cold machine can take a while
# The trainer runs a little below normal CPU priority, so the dashboard gets a core the moment it
# has a frame to draw. Measured on 2 cores (digits, 4 rounds each): key press to changed screen
# median 72 ms (p90 134) at +5 against 103 ms (p90 213) at 0; training steps/s 0.92 against 0.97
# of headless, within this machine's noise. Only CPU scheduling changes: GPU work does not.
TRAINER_NICE = 5
LOG_NAME = "run.log"


def child_env(cfg: RunConfig) -> dict[str, str]:
    """The environment that hands a claimed config to the trainer child (and, for torchrun, the
    grace its agent gives ranks that will not stop: ours)."""
    from sgdwalk.tui.commands.children import stop_grace

    assert cfg.session is not None, "claim(cfg) first"
    grace = (
        {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": f"{stop_grace():.0f}"} if torchrun.launches(cfg) else {}
    )
    return {CONFIG_ENV: json.dumps(cfg.as_dict())} | grace


def claimed_config() -> RunConfig | None:
    """In the trainer child: the config its parent claimed (None when not started so)."""
    text = os.environ.get(CONFIG_ENV)
    return None if text is None else build_config(json.loads(text))


def trainer_argv(cfg: RunConfig) -> list[str]:
    """The child's command line: the trainer module, under torchrun for several processes."""
    if torchrun.launches(cfg):
        return torchrun.argv(cfg, [CHILD_MODULE])
    return [sys.executable, "-m", CHILD_MODULE]


def start_trainer(cfg: RunConfig, detached: bool) -> subprocess.Popen[bytes]:
    """Start the trainer for a claimed ``cfg`` in a child; returns once its session exists.

    ``detached``: the child gets a session of its own, so a hang-up never reaches it; otherwise it
    stays in this terminal's process group and a hang-up stops it cleanly.
    """
    return start_child(trainer_argv(cfg), session_of(cfg), new_session=detached,
                       env=child_env(cfg))  # fmt: skip


def owner_env() -> dict[str, str]:
    """The environment that tells a child which command it belongs to (none with --detach)."""
    return {OWNER_ENV: str(os.getpid())}


class Orphaned:
    """In a trainer: whether the command it belongs to (``$SGDWALK_OWNER``) or its own parent
    is gone; asked as a stop, it looks at most once a second."""

    def __init__(self) -> None:
        owner = os.environ.get(OWNER_ENV, "")
        self.owner = int(owner) if owner.isdigit() else None
        self.parent = os.getppid()
        self.gone = False
        self._next = 0.0

    def __call__(self) -> bool:
        if self.owner is None or self.gone or time.monotonic() < self._next:
            return self.gone
        self._next = time.monotonic() + 1.0
        self.gone = os.getppid() != self.parent or not _alive(self.owner)
        return self.gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EndedEarly(LaunchError):
    """The child ended before its session existed: its exit code (as a shell says it) and the
    last line it printed."""

    def __init__(self, code: int, last: str) -> None:
        super().__init__(last or f"the trainer exited with code {code}", code or 1)
        self.code, self.last = code, last


def start_child(
    argv: list[str], directory: Path, new_session: bool, env: dict[str, str] | None = None,
    what: str = "the trainer",
) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start the child (``what`` names it in messages) with its output in the claimed folder's
    log; returns once its session can be opened.

    ``new_session=False`` keeps the child in the terminal's process group, so a hang-up (SSH drop)
    reaches it and stops it cleanly, as a run without ``--detach`` should; such a child belongs to
    this command (``$SGDWALK_OWNER``). Raises ``EndedEarly`` with the child's own last line (and
    exit code) if it exits first; a child that is not detached is stopped when the wait ends
    otherwise (Ctrl+C, or no session within ``START_TIMEOUT``).
    """
    log = directory / LOG_NAME
    env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    if not new_session:
        env |= owner_env()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=new_session, env=env)  # fmt: skip
    _lower_priority(proc.pid)
    try:
        _wait_for_session(proc, directory, log, what)
    except BaseException as e:
        if not isinstance(e, EndedEarly):
            _give_up(proc, directory, what, detached=new_session)
        raise
    return proc


def shell_code(returncode: int) -> int:
    """A child's exit code as a shell reports it: 128 + N for one killed by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def _lower_priority(pid: int) -> None:
    if not hasattr(os, "setpriority"):
        return  # not POSIX
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, pid) + TRAINER_NICE
        os.setpriority(os.PRIO_PROCESS, pid, min(19, niceness))
    except ProcessLookupError:
        pass  # it already exited: _wait_for_session reports why


def _wait_for_session(proc: subprocess.Popen[bytes], directory: Path, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if (directory / DB_NAME).exists():
            try:
                open_session(directory).close()
                return
            except SessionError:
                pass  # the child is still writing the schema
        code = proc.poll()
        if code is not None:
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            release(directory)
            last = lines[-1].removeprefix(ERROR_PREFIX) if lines else ""
            raise EndedEarly(shell_code(code), last)
        time.sleep(0.1)
    raise LaunchError(f"{what} (pid {proc.pid}) did not create its session within "
                      f"{START_TIMEOUT:.0f} s (log {log})", 1)  # fmt: skip


def _give_up(proc: subprocess.Popen[bytes], directory: Path, what: str, detached: bool) -> None:
    """The wait for a child's session ended without one (Ctrl+C, the time limit): a child that
    is not detached is stopped (killed after the grace) and its folder given back."""
    from sgdwalk.tui.commands.children import Owned

    if detached:
        return  # it goes on in the background; its folder is its own
    Owned(proc, what, directory).stop(signal.SIGTERM)
    release(directory)

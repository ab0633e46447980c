"""The trainer child: the headless trainer started for a dashboard, in the background.

The parent claims the session's folder (``sgdwalk.session.naming``) and hands the child its whole
config as data: ``python -m sgdwalk.tui.commands.child`` with ``RunConfig.as_dict()`` as JSON in
``$SGDWALK_CLAIMED_RUN`` (the environment reaches every rank torchrun starts, too), so nothing is
re-parsed from flags. With ``--detach`` the child runs in its own session (``start_new_session``)
so an SSH hang-up never reaches it. Its output goes to ``run.log`` inside the claimed folder; the
parent waits until the session can be opened, then follows it like any other reader. A child
that ends before its session exists gives the folder back, and its last line is the error.
"""

from __future__ import annotations

import json
import os
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
CHILD_MODULE = "sgdwalk.tui.commands.child"
START_TIMEOUT = 300.0  # data loading on a cold machine can take a while
# The trainer runs a little below normal CPU priority, so the dashboard gets a core the moment it
# has a frame to draw. Measured on 2 cores (digits, 4 rounds each): key press to changed screen
# median 72 ms (p90 134) at +5 against 103 ms (p90 213) at 0; training steps/s 0.92 against 0.97
# of headless, within this machine's noise. Only CPU scheduling changes: GPU work does not.
TRAINER_NICE = 5
LOG_NAME = "run.log"


def child_env(cfg: RunConfig) -> dict[str, str]:
    """The environment that hands a claimed config to the trainer child."""
    assert cfg.session is not None, "claim(cfg) first"
    return {CONFIG_ENV: json.dumps(cfg.as_dict())}


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


def start_child(
    argv: list[str], directory: Path, new_session: bool, env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start the child with its output in the claimed folder's log; returns once its session can
    be opened.

    ``new_session=False`` keeps the child in the terminal's process group, so a hang-up (SSH drop)
    reaches it and stops it cleanly, as a run without ``--detach`` should.
    Raises ``LaunchError`` with the child's own error line (and exit code) if it exits first.
    """
    log = directory / LOG_NAME
    env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=new_session, env=env)  # fmt: skip
    _lower_priority(proc.pid)
    _wait_for_session(proc, directory, log)
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


def _wait_for_session(proc: subprocess.Popen[bytes], directory: Path, log: Path) -> None:
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
            lines = log.read_text(errors="replace").strip().splitlines()
            release(directory)
            last = lines[-1].removeprefix(ERROR_PREFIX) if lines else ""
            raise LaunchError(last or f"the trainer exited with code {code}", code)
        time.sleep(0.1)
    raise LaunchError(f"the background run did not create its session within {START_TIMEOUT:.0f}s "
                      f"(pid {proc.pid}, log {log})", 1)  # fmt: skip

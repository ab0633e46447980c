"""``sgdwalk run --detach``: train in a background process that outlives the dashboard.

The child is ``sgdwalk run --headless`` with the same flags and an explicit ``--session`` name, in
its own session (``start_new_session``) so an SSH hang-up never reaches it; its output goes to
``run.log`` inside the session folder. The session folder must not exist before the child creates
it (``check_new_session``), so the log starts beside it and moves in once the session appears (a
rename keeps the child's open file). Then ``watch`` attaches to the session like any other reader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sgdwalk.session import DB_NAME, SessionError, open_session

BOOL_PAIRS = {
    "batchnorm": ("--batchnorm", "--no-batchnorm"),
    "augment": ("--augment", "--no-augment"),
}
START_TIMEOUT = 300.0  # data loading on a cold machine can take a while
# The trainer runs a little below normal CPU priority, so the dashboard gets a core the moment it
# has a frame to draw. Measured on 2 cores (digits, 4 rounds each): key press to changed screen
# median 72 ms (p90 134) at +5 against 103 ms (p90 213) at 0; training steps/s 0.92 against 0.97
# of headless, within this machine's noise. Only CPU scheduling changes: GPU work does not.
TRAINER_NICE = 5
LOG_NAME = "run.log"


def child_argv(
    flags: dict[str, Any], config: Path | None, name: str, sessions_dir: Path
) -> list[str]:
    """``python -m tui.cli run --headless`` with every flag the user gave, and the session name."""
    argv = [sys.executable, "-m", "sgdwalk.tui.cli", "run", "--headless"]
    for key, value in flags.items():
        if value is None or key in ("session", "sessions_dir"):
            continue
        opt = "--" + key.replace("_", "-")
        if key in BOOL_PAIRS:
            argv.append(BOOL_PAIRS[key][0 if value else 1])
        elif isinstance(value, bool):
            argv += [opt] if value else []
        else:
            argv += [opt, str(value)]
    if config is not None:
        argv += ["--config", str(Path(config).resolve())]
    return argv + ["--session", name, "--sessions-dir", str(Path(sessions_dir).resolve())]


def start_detached(
    argv: list[str], name: str, sessions_dir: Path, new_session: bool = True
) -> subprocess.Popen[bytes]:
    """Start the child with its output in a log file; returns once its session can be opened.

    ``new_session=False`` keeps the child in the terminal's process group, so a hang-up (SSH drop)
    reaches it and stops it cleanly, as a run without ``--detach`` should.
    Raises ``DetachError`` with the child's last output line if it exits first.
    """
    sessions_dir.mkdir(parents=True, exist_ok=True)
    log_tmp = sessions_dir / f".{name}.{LOG_NAME}"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with open(log_tmp, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=new_session, env=env)  # fmt: skip
    _lower_priority(proc.pid)
    _wait_for_session(proc, sessions_dir / name, log_tmp)
    os.replace(log_tmp, sessions_dir / name / LOG_NAME)
    return proc


def _lower_priority(pid: int) -> None:
    if not hasattr(os, "setpriority"):
        return  # not POSIX
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, pid) + TRAINER_NICE
        os.setpriority(os.PRIO_PROCESS, pid, min(19, niceness))
    except ProcessLookupError:
        pass  # it already exited: _wait_for_session reports why


class DetachError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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
            log.unlink(missing_ok=True)
            raise DetachError(lines[-1] if lines else f"background run exited with {code}", code)
        time.sleep(0.1)
    raise DetachError(f"the background run did not create its session within {START_TIMEOUT:.0f}s "
                      f"(pid {proc.pid}, log {log})", 1)  # fmt: skip

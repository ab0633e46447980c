"""``sgdwalk exec -- python train.py ARGS``: the user's own script as the trainer child.

The script measures itself with ``sgdwalk.Walker``; this command names its session through the
environment (``SGDWALK_SESSION`` and ``SGDWALK_SESSIONS``, which the Walker reads), starts it the
way ``run`` starts its trainer (in this terminal's process group, or in its own with ``--detach``;
output in ``run.log`` in the session), and opens the dashboard once the session exists. ``p`` and
``s`` signal the script (SIGUSR1/SIGUSR2, SIGTERM), which the Walker turns into a pause between
steps and a clean stop. Without a terminal (or with ``--headless``) the script simply runs here,
its output passing through, and its exit code is this command's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sgdwalk.errors import LaunchError, UsageError
from sgdwalk.session.naming import SESSION_ENV, SESSIONS_ENV, claim, release
from sgdwalk.tui.commands.dashboards import say, watch, watch_owned
from sgdwalk.tui.commands.trainer import shell_code, start_child


def script_name(argv: list[str]) -> str:
    """The script's name for its session's default name: the first argument ending in .py, else
    the program."""
    script = next((a for a in argv if a.endswith(".py")), argv[0])
    return Path(script).stem or "script"


def exec_script(
    argv: list[str], name: str | None, sessions_dir: Path, detach: bool, headless: bool
) -> int:
    if not argv:
        raise UsageError("exec: give the command to run after --, e.g. "
                         "`sgdwalk exec -- python train.py`")  # fmt: skip
    sessions_dir = sessions_dir.resolve()
    directory = claim(sessions_dir, name, script_name(argv))
    name = directory.name
    env = {SESSION_ENV: name, SESSIONS_ENV: str(sessions_dir)}
    if headless or not sys.stdout.isatty():
        try:
            return _run_here(argv, env)
        finally:
            release(directory)  # a script that made no Walker leaves no folder
    proc = _start(argv, directory, detach, env)
    if detach:
        say(f"sgdwalk: {argv[0]} runs in the background (pid {proc.pid}), "
            f"session {sessions_dir / name}")  # fmt: skip
        return watch(name, sessions_dir, pid=proc.pid, detached=True)
    shown, code, _ = watch_owned(proc, directory, proc.pid)  # q stops it (cleanly: the Walker)
    return shown if shown and code == 0 else code


def _start(
    argv: list[str], directory: Path, detach: bool, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    try:
        return start_child(argv, directory, new_session=detach, env=env)
    except FileNotFoundError:
        release(directory)
        raise UsageError(f"exec: {argv[0]!r} was not found") from None
    except LaunchError as e:
        raise LaunchError(f"{e} (the script ended before it created its session: does it make "
                          "a sgdwalk.Walker?)", e.exit_code) from None  # fmt: skip


def _run_here(argv: list[str], env: dict[str, str]) -> int:
    """The script in the foreground with this terminal's output; Ctrl+C reaches it directly."""
    try:
        proc = subprocess.Popen(argv, env=os.environ | env)
    except FileNotFoundError:
        raise UsageError(f"exec: {argv[0]!r} was not found") from None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the script decides what Ctrl+C does
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return shell_code(code)

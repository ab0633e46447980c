"""``sgdwalk exec -- python train.py ARGS``: the user's own script as the trainer child.

The script measures itself with ``sgdwalk.Walker``; this command names its session through the
environment (``SGDWALK_SESSION`` and ``SGDWALK_SESSIONS``, which the Walker reads), starts it the
way ``run`` starts its trainer (in this terminal's process group, or in its own with ``--detach``;
output in ``run.log`` in the session), and opens the dashboard once the session exists. ``p`` and
``s`` signal the script (SIGUSR1/SIGUSR2, SIGTERM), which the Walker turns into a pause between
steps and a clean stop; a script that will not stop is killed after the grace of
``children.stop_grace``. Without a terminal (or with ``--headless``) the script runs here, its
output passing through, and its exit code is this command's; ``--detach`` always leaves it in the
background (watched only in a terminal). Its stdin is /dev/null in every mode: a script that
prompts would wait for a key nobody can type.

A script that ends without creating a session (it made no Walker, or failed before) is one line
saying so with the script's exit code, and this command exits with that code (2 when it was 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sgdwalk.errors import EXIT_USAGE, LaunchError, UsageError
from sgdwalk.session import DB_NAME
from sgdwalk.session.naming import SESSION_ENV, SESSIONS_ENV, claim, release
from sgdwalk.tui.commands.children import Owned
from sgdwalk.tui.commands.dashboards import say, watch, watch_owned
from sgdwalk.tui.commands.trainer import EndedEarly, owner_env, shell_code, start_child


def script_of(argv: list[str]) -> str:
    """The script a command line runs: the first argument ending in .py, else the program."""
    return next((a for a in argv if a.endswith(".py")), argv[0])


def script_name(argv: list[str]) -> str:
    """The script's name for its session's default name."""
    return Path(script_of(argv)).stem or "script"


def exec_script(
    argv: list[str], name: str | None, sessions_dir: Path, detach: bool, headless: bool
) -> int:
    if not argv:
        raise UsageError("exec: give the command to run after --, e.g. "
                         "`sgdwalk exec -- python train.py`")  # fmt: skip
    runnable(argv[0])
    sessions_dir = sessions_dir.resolve()
    directory = claim(sessions_dir, name, script_name(argv))
    name = directory.name
    env = {SESSION_ENV: name, SESSIONS_ENV: str(sessions_dir)}
    terminal = sys.stdout.isatty() and not headless
    if not detach and not terminal:
        return _run_here(argv, env, directory)
    proc = _start(argv, directory, detach, env)
    if detach:
        say(f"sgdwalk: {script_of(argv)} runs in the background (pid {proc.pid}), "
            f"session {sessions_dir / name} (its output: run.log there)")  # fmt: skip
        return watch(name, sessions_dir, pid=proc.pid, detached=True) if terminal else 0
    shown, code, _ = watch_owned(proc, directory, proc.pid, what=script_of(argv))
    return shown if shown and code == 0 else code


def runnable(program: str) -> None:
    """Refuse, in one line, a program that cannot be started: empty, missing, a folder, or a
    file without the execute permission."""
    if not program.strip():
        raise UsageError("exec: the command to run is empty")
    path = Path(program) if os.sep in program else None
    found = shutil.which(program) if path is None else str(path)
    if found is None or not Path(found).exists():
        raise UsageError(f"exec: {program!r} was not found")
    if Path(found).is_dir():
        raise UsageError(f"exec: {program!r} is a folder, not a program")
    if not os.access(found, os.X_OK):
        raise UsageError(f"exec: {program!r} is not executable: `chmod +x {program}`, or run it "
                         f"with its interpreter (`sgdwalk exec -- python {program}`)")  # fmt: skip


def no_session(program: str, code: int, last: str = "") -> LaunchError:
    """The one line for a script that ended without creating its session."""
    tail = f" (its last line: {last.strip()})" if last.strip() else ""
    return LaunchError(f"exec: {program} ended (exit code {code}) without creating a session: "
                       f"does it make a sgdwalk.Walker?{tail}", code or EXIT_USAGE)  # fmt: skip


def _start(
    argv: list[str], directory: Path, detach: bool, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    try:
        return start_child(argv, directory, new_session=detach, env=env, what=script_of(argv))
    except OSError as e:
        release(directory)
        raise UsageError(f"exec: cannot start {argv[0]!r}: {e.strerror or e}") from None
    except EndedEarly as e:
        raise no_session(script_of(argv), e.code, e.last) from None


def _run_here(argv: list[str], env: dict[str, str], directory: Path) -> int:
    """The script in the foreground, its output passing through; this command's stop signals
    (Ctrl+C, SIGTERM, SIGHUP) are passed on to it, and it is killed if it will not stop."""
    try:
        try:
            proc = subprocess.Popen(argv, env=os.environ | env | owner_env(),
                                    stdin=subprocess.DEVNULL, process_group=0)  # fmt: skip
        except OSError as e:
            raise UsageError(f"exec: cannot start {argv[0]!r}: {e.strerror or e}") from None
        code = shell_code(Owned(proc, script_of(argv), directory, own_group=True).wait())
        if not (directory / DB_NAME).exists():
            raise no_session(script_of(argv), code)
        return code
    finally:
        release(directory)  # a script that made no Walker leaves no folder

"""What ``sgdwalk run`` (in a terminal), ``watch`` and ``replay`` do, kept out of the Typer module.

A run is prepared *before* the app starts, so bad input still prints one line and exits 2 with the
terminal untouched. After the app closes, the run (if it trained here) is stopped and its worker
waited for, so the session always ends with a final status and everything committed.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from sgdwalk.config import RunConfig
from sgdwalk.records import DIVERGED, FAILED, FINISHED, INTERRUPTED
from sgdwalk.session import open_session

EXIT_CODES = {FINISHED: 0, INTERRUPTED: 130, DIVERGED: 3, FAILED: 1}
STOP_WAIT = 600.0  # seconds to wait for a stopped run to finish its current step


def _say(text: str) -> None:
    with contextlib.suppress(OSError):  # the terminal is gone (SSH drop); the session has it all
        print(text, flush=True)


def run_dashboard_child(cfg: RunConfig, flags: dict[str, Any], config: Path | None) -> int:
    """``sgdwalk run`` in a terminal: train in a child process, watch it from this one.

    Why a process and not a thread: the dashboard's drawing is pure Python and holds the GIL, and a
    small model's training step is hundreds of short torch calls that each need it back. In one
    process the two starve each other (measured: the digits default ran at 0.26x its headless
    speed); in two processes each has a core. The child is ``run --headless`` in this terminal's
    process group, so a hang-up stops it cleanly; quitting the dashboard stops it too (SIGTERM),
    and ``p`` pauses it (SIGUSR1/SIGUSR2) between steps. Bad input still fails before the
    dashboard starts: the child's one-line error is printed with its exit code.
    """
    from sgdwalk.runner import check_new_session, default_session_name
    from sgdwalk.tui.detach import DetachError, child_argv, start_detached

    check_new_session(cfg)
    sessions = Path(cfg.sessions_dir)
    name = cfg.session or default_session_name(cfg, sessions)
    try:
        proc = start_detached(child_argv(flags, config, name, sessions), name, sessions,
                              new_session=False)  # fmt: skip
    except DetachError as e:
        sys.stderr.write(f"{e}\n")
        return e.code
    try:
        watch_dashboard(name, sessions, pid=proc.pid, owned=True)
    finally:
        with open_session(sessions / name) as session:
            training = session.stored_status == "running"
        if training and proc.poll() is None:
            proc.terminate()  # the user quit without --detach: the run stops cleanly
        code = proc.wait()  # a child that already recorded its ending exits by itself
    with open_session(sessions / name) as session:
        _say(f"sgdwalk: {session.status}: session {session.path} (log: run.log there)")
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def run_dashboard(cfg: RunConfig) -> int:
    """``sgdwalk run --in-process``: train in a worker thread of the dashboard's own process."""
    from sgdwalk.runner import check_new_session, open_writer
    from sgdwalk.train import prepare
    from sgdwalk.tui.app import make_app
    from sgdwalk.tui.sources import LiveSource

    check_new_session(cfg)
    run = prepare(cfg)
    info = run.info
    writer = open_writer(cfg, info)
    source = LiveSource(run, writer, writer.directory.name, info)
    app = make_app(source)
    app.run()
    source.stop()
    if not source.done.wait(STOP_WAIT):
        _say(f"sgdwalk: the run did not stop within {STOP_WAIT:.0f}s; session {writer.directory}")
        return 1
    if app.engine_error is not None:
        err = app.engine_error
        _say(f"sgdwalk: failed: {type(err).__name__}: {err} (see {writer.directory / 'error.txt'})")
        return 1
    _say(f"sgdwalk: {source.status}: session {writer.directory}")
    return EXIT_CODES.get(source.status, 1)


def watch_dashboard(
    spec: str, sessions_dir: Path, pid: int | None = None, detached: bool = False,
    owned: bool = False,
) -> int:  # fmt: skip
    from sgdwalk.tui.app import make_app
    from sgdwalk.tui.sources import FollowSource

    session = open_session(spec, sessions_dir)
    source = FollowSource(session, pid=pid, detached=detached, owned=owned)
    app = make_app(source)
    app.run()
    source.stop()
    status = source.status
    if owned:
        pass  # the caller stops the child and reports its ending
    elif status == "running":
        _say(f"sgdwalk: {session.name} is still running; `sgdwalk watch {session.name}` reattaches")
    else:
        _say(f"sgdwalk: {session.name}: {status}")
    source.close()
    return 0


def replay_dashboard(spec: str, sessions_dir: Path) -> int:
    from sgdwalk.tui.app import make_app
    from sgdwalk.tui.replay import ReplayCursor

    session = open_session(spec, sessions_dir)
    if session.step_count() == 0:
        session.close()
        sys.stderr.write(f"sgdwalk: error: session {session.name!r} has no steps to replay\n")
        return 2
    make_app(ReplayCursor(session)).run()
    session.close()
    return 0

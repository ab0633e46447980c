"""The commands that open the dashboard: ``run`` in a terminal, ``run --detach``, ``watch``, ``replay``.

Why the trainer is a child process by default: the dashboard's drawing is pure Python and holds
the GIL, and a small model's training step is hundreds of short torch calls that each need it
back. In one process the two starve each other (measured: the digits default ran at 0.26x its
headless speed); in two processes each has a core. The child is ``run --headless`` in this
terminal's process group, so a hang-up stops it cleanly; quitting the dashboard stops it too
(SIGTERM), and ``p`` pauses it (SIGUSR1/SIGUSR2) between steps. ``--in-process`` keeps the old
worker-thread mode. After the app closes, a run this command started is stopped and waited for, so
its session always ends with a final status and everything committed; a child that will not
stop is killed after a grace (``sgdwalk.tui.commands.children``).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from sgdwalk import torchrun
from sgdwalk.config import RunConfig
from sgdwalk.errors import EXIT_CODES, SessionError, exit_code
from sgdwalk.records import FAILED, RUNNING
from sgdwalk.runner import claim, open_run
from sgdwalk.session import DB_NAME, Session, open_session
from sgdwalk.tui.commands.children import Owned
from sgdwalk.tui.commands.trainer import shell_code, start_trainer

STOP_WAIT = 600.0  # seconds to wait for a stopped in-process run to finish its current step


def say(text: str) -> None:
    """Print a closing line; a terminal that is gone (SSH drop) is no error: the session has it."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def run_in_terminal(cfg: RunConfig) -> int:
    """``sgdwalk run`` in a terminal: train in a child process, watch it from this one."""
    cfg = claim(cfg)
    proc = start_trainer(cfg, detached=False)
    assert cfg.session is not None
    sessions = Path(cfg.sessions_dir)
    launched = torchrun.launches(cfg)
    # under torchrun the child is torchrun's agent: p and s signal rank 0 (the session's writer)
    shown, code, status = watch_owned(proc, sessions / cfg.session, None if launched else proc.pid)
    if shown and code == 0:
        return shown
    if launched:
        return shown or exit_code(status)  # torchrun says 1 for any rank that did not exit 0
    return code


def watch_owned(
    proc: subprocess.Popen[bytes], directory: Path, pid: int | None, what: str = "the trainer"
) -> tuple[int, int, str]:
    """The dashboard over the session of a child this command started without ``--detach``:
    quitting it stops the child cleanly (SIGTERM, while it still trains; killed after the grace
    of ``children.stop_grace`` if it will not stop), and the child is waited for, so its session
    always ends with a final status. Returns the dashboard's exit code, the child's (in the
    shell's convention) and the session's status."""
    owned = Owned(proc, what, directory)
    try:
        shown = watch(directory.name, directory.parent, pid=pid, owned=True)
    finally:
        code = owned.stop() if _training(directory) else owned.wait()
        owned.settle(f"{what} ended (exit code {shell_code(code)}) without recording an ending")
    try:
        with open_session(directory) as session:
            say(f"sgdwalk: {session.status}: session {session.path} (log: run.log there)")
            return shown, shell_code(code), session.status
    except SessionError as e:  # its folder went away under it: the child's own error says why
        say(
            f"sgdwalk: {what} ended (exit code {shell_code(code)}); its session cannot be read: {e}"
        )
        return shown, shell_code(code) or EXIT_CODES[FAILED], FAILED


def _training(directory: Path) -> bool:
    """Whether the session's writer has not recorded its ending yet (or cannot be read)."""
    try:
        with open_session(directory) as session:
            return session.stored_status == RUNNING
    except SessionError:
        return True


def run_detached(cfg: RunConfig, then_watch: bool) -> int:
    """``--detach``: train in the background, then (in a terminal) watch it; quitting leaves it
    running."""
    cfg = claim(cfg)
    proc = start_trainer(cfg, detached=True)
    assert cfg.session is not None
    sessions = Path(cfg.sessions_dir)
    say(f"sgdwalk: training in the background (pid {proc.pid}), session {sessions / cfg.session}")
    if not then_watch:
        return 0
    pid = None if torchrun.launches(cfg) else proc.pid
    return watch(cfg.session, sessions, pid=pid, detached=True)


def run_in_process(cfg: RunConfig) -> int:
    """``--in-process``: train in a worker thread of the dashboard's own process."""
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import RunSource

    run, writer = open_run(claim(cfg))
    source = RunSource(run, writer, writer.directory.name, run.info, cfg.log_to)
    app = make_app(source)
    app.run()
    source.stop()
    if crashed(app):
        source.done.wait(STOP_WAIT)
        return EXIT_CODES[FAILED]
    if not source.done.wait(STOP_WAIT):
        say(f"sgdwalk: the run did not stop within {STOP_WAIT:.0f}s; session {writer.directory}")
        return EXIT_CODES[FAILED]
    if app.engine_error is not None:
        err = app.engine_error
        say(f"sgdwalk: failed: {type(err).__name__}: {err} (see {writer.directory / 'error.txt'})")
        return EXIT_CODES[FAILED]
    say(f"sgdwalk: {source.status}: session {writer.directory}")
    return exit_code(source.status)


def watch(
    spec: str, sessions_dir: Path, pid: int | None = None, detached: bool = False,
    owned: bool = False, wait: float = 0.0,
) -> int:  # fmt: skip
    """The dashboard over a session another process writes (or wrote); ``wait`` seconds for one
    that does not exist yet."""
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import WatchSource

    session = open_when_there(spec, sessions_dir, wait)
    source = WatchSource(session, pid=pid, detached=detached, owned=owned)
    app = make_app(source)
    app.run()
    source.stop()
    status = source.status
    if owned:
        pass  # the caller stops the child and reports its ending
    elif status == RUNNING:
        say(f"sgdwalk: {session.name} is still running; `sgdwalk watch {session.name}` reattaches")
    else:
        say(f"sgdwalk: {session.name}: {status}")
    source.close()
    return crashed(app)


SCHEMA_GRACE = 2.0  # seconds a session file that exists may take to hold its schema


def open_when_there(spec: str, sessions_dir: Path, wait: float) -> Session:
    """Open a session; one that a run about to start will create (``watch`` typed in another
    window just before ``run``) is waited for, up to ``wait`` seconds. A file that is there but
    does not open within ``SCHEMA_GRACE`` seconds is damaged or foreign: its error goes up."""
    deadline = time.monotonic() + wait
    seen: float | None = None
    told = False
    while True:
        try:
            return open_session(spec, sessions_dir)
        except SessionError:
            now = time.monotonic()
            if _file_there(spec, sessions_dir):
                seen = now if seen is None else seen
                if now - seen > SCHEMA_GRACE:
                    raise
            elif now > deadline:
                raise
            if not told and now + 0.5 < deadline:
                say(f"sgdwalk: waiting for session {spec!r} to appear in {sessions_dir} "
                    f"(up to {wait:.0f} s; Ctrl+C stops waiting)")  # fmt: skip
                told = True
            time.sleep(0.1)


def _file_there(spec: str, sessions_dir: Path) -> bool:
    candidates = (Path(sessions_dir) / spec / DB_NAME, Path(spec) / DB_NAME, Path(spec))
    return any(p.is_file() for p in candidates if str(p))


def crashed(app: Any) -> int:
    """The exit code of a dashboard: 0, or 1 when it ended on an error (Textual printed it)."""
    if app.return_code:
        say("sgdwalk: the dashboard stopped on an error (above); the session is unharmed")
        return EXIT_CODES[FAILED]
    return 0


def replay(spec: str, sessions_dir: Path) -> int:
    """The dashboard over a saved session, with a cursor."""
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.replay import ReplaySource

    with open_session(spec, sessions_dir) as session:
        if session.step_count() == 0:
            raise SessionError(f"session {session.name!r} has no steps to replay")
        app = make_app(ReplaySource(session))
        app.run()
    return crashed(app)

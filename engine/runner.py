"""Driving a prepared run into a session: the one loop every front end shares.

The headless CLI, the dashboard's worker and a detached background run all do the same thing:
iterate ``Run.records``, hand each record to the session writer, pass it on to a display, and turn
the way the loop ended into the session's final status. Keeping it here means the status rules
(finished / interrupted / diverged / failed) are written once.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sgdwalk.config import RunConfig
from sgdwalk.records import (
    FAILED,
    INTERRUPTED,
    PAUSED_EVENT,
    RESUMED_EVENT,
    EventLogged,
    Record,
)
from sgdwalk.session import SessionError, SessionWriter, session_dir


def default_session_name(cfg: RunConfig, sessions_dir: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{cfg.dataset}-{cfg.model}-{stamp}"
    name, n = base, 1
    while (Path(sessions_dir) / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def check_new_session(cfg: RunConfig) -> None:
    """Fail fast (before loading data) on a bad or taken session name."""
    if cfg.session is not None:
        directory = session_dir(Path(cfg.sessions_dir), cfg.session)
        if directory.exists():
            raise SessionError(
                f"session {cfg.session!r} already exists in {cfg.sessions_dir}; "
                "choose another --session name"
            )


def open_writer(cfg: RunConfig, info: dict[str, object]) -> SessionWriter:
    sessions = Path(cfg.sessions_dir)
    name = cfg.session or default_session_name(cfg, sessions)
    directory = session_dir(sessions, name)
    config = cfg.as_dict() | {"session": name}
    return SessionWriter(directory, config, info)


def drive(
    records: Iterator[Record],
    writer: SessionWriter,
    status_of_run: Callable[[], str],
    on_record: Callable[[Record], None] | None = None,
) -> str:
    """Write every record to the session (and ``on_record``); close it with the final status."""
    message = ""
    try:
        for rec in records:
            writer.write(rec)
            if isinstance(rec, EventLogged):
                message = rec.message  # the run's last word becomes the session's message
            if on_record is not None:
                on_record(rec)
    except KeyboardInterrupt:
        writer.close(INTERRUPTED, "interrupted")
        return INTERRUPTED
    except BaseException as e:
        writer.close(FAILED, f"{type(e).__name__}: {e}")
        writer_failure = traceback.format_exc()
        (writer.directory / "error.txt").write_text(writer_failure)
        raise
    status = status_of_run()
    writer.close(status, message)
    return status


class RunControls:
    """What signals ask of a running trainer: stop cleanly, or pause and resume."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.paused = threading.Event()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def pausable(self, records: Iterator[Record]) -> Iterator[Record]:
        """Pass records on; while paused, hold the (lazy) training generator between records.

        A pause is acknowledged with a ``paused`` event naming the last step taken (the writer
        commits events at once, so whoever follows the session sees the pause only once training
        really holds, with every step before it), and the end of one with a ``resumed`` event.
        """
        started = time.monotonic()
        step = epoch = 0
        for rec in records:
            step = getattr(rec, "step", step)
            epoch = getattr(rec, "epoch", epoch)
            yield rec
            if not self.paused.is_set() or self.stop.is_set():
                continue
            yield EventLogged(step, epoch, "info", PAUSED_EVENT,
                              f"training held after step {step}", time.monotonic() - started)  # fmt: skip
            while self.paused.is_set() and not self.stop.is_set():
                time.sleep(0.05)
            if not self.stop.is_set():
                yield EventLogged(step, epoch, "info", RESUMED_EVENT, "training goes on",
                                  time.monotonic() - started)  # fmt: skip


PAUSE_SIGNAL = getattr(signal, "SIGUSR1", None)  # what a dashboard sends a trainer to pause it
RESUME_SIGNAL = getattr(signal, "SIGUSR2", None)


@contextmanager
def stop_on_signals() -> Iterator[RunControls]:
    """SIGINT, SIGTERM and SIGHUP stop cleanly; SIGUSR1 pauses and SIGUSR2 resumes.

    The previous handlers are restored on exit.
    """
    controls = RunControls()
    actions: dict[signal.Signals | None, Callable[[], None]] = {
        signal.SIGINT: controls.stop.set,
        signal.SIGTERM: controls.stop.set,
        getattr(signal, "SIGHUP", None): controls.stop.set,
        PAUSE_SIGNAL: controls.paused.set,
        RESUME_SIGNAL: controls.paused.clear,
    }
    previous = {}

    def handler(signum: int, _frame: object) -> None:
        actions[signal.Signals(signum)]()

    for sig in actions:
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield controls
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = [
    "SessionError",
    "check_new_session",
    "default_session_name",
    "drive",
    "open_writer",
    "stop_on_signals",
]

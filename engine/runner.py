"""Driving a prepared run into a session: the one loop every front end shares.

The headless CLI, the dashboard's worker and a detached background run all do the same thing:
iterate ``Run.records``, hand each record to the session writer, pass it on to a display, and turn
the way the loop ended into the session's final status. Keeping it here means the status rules
(finished / interrupted / diverged / failed) are written once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sgdwalk.config import RunConfig
from sgdwalk.errors import SessionError, StorageError
from sgdwalk.records import (
    ENDINGS,
    FAILED,
    INTERRUPTED,
    PAUSED_EVENT,
    RESUMED_EVENT,
    EventLogged,
    Record,
)
from sgdwalk.session import SessionWriter, session_dir

if TYPE_CHECKING:
    from sgdwalk.train import Run


def default_session_name(cfg: RunConfig) -> str:
    """DATASET-MODEL-YYYYmmdd-HHMMSS, with -2, -3, ... if that is taken."""
    base = f"{cfg.dataset}-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (Path(cfg.sessions_dir) / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def claim(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its session name settled, before any data loads: the given name if it is
    valid and free (else ``SessionError``), or the default one."""
    if cfg.session is None:
        return dataclasses.replace(cfg, session=default_session_name(cfg))
    if session_dir(Path(cfg.sessions_dir), cfg.session).exists():
        raise SessionError(
            f"session {cfg.session!r} already exists in {cfg.sessions_dir}; "
            "choose another --session name"
        )
    return cfg


def open_run(cfg: RunConfig) -> tuple[Run, SessionWriter]:
    """Prepare a claimed run in this process and open its session writer."""
    from sgdwalk.train import prepare

    assert cfg.session is not None, "claim(cfg) first"
    run = prepare(cfg)
    directory = session_dir(Path(cfg.sessions_dir), cfg.session)
    return run, SessionWriter(directory, cfg.as_dict(), run.info)


def drive(
    records: Iterator[Record],
    writer: SessionWriter,
    on_record: Callable[[Record], None] | None = None,
) -> str:
    """Write every record to the session (and ``on_record``); close it with the final status.

    The status is the kind of the last ending event the run yielded (finished, interrupted,
    diverged); a loop that stops without one was interrupted. Ctrl+C inside the loop ends it
    interrupted; any other exception writes a ``failed`` event, marks the session failed, keeps
    the traceback in ``error.txt`` beside it (when the disk allows) and goes on up.
    """
    ending, message, where = INTERRUPTED, "stopped without an ending", (0, 0)
    started = time.monotonic()
    try:
        for rec in records:
            writer.write(rec)
            where = (getattr(rec, "step", where[0]), getattr(rec, "epoch", where[1]))
            if isinstance(rec, EventLogged) and rec.kind in ENDINGS:
                ending, message = rec.kind, rec.message
            if on_record is not None:
                on_record(rec)
    except KeyboardInterrupt:
        writer.close(INTERRUPTED, "interrupted")
        return INTERRUPTED
    except BaseException as e:
        _failed(writer, e, where, time.monotonic() - started)
        raise
    writer.close(ending, message)
    return ending


def _failed(writer: SessionWriter, e: BaseException, where: tuple[int, int], t: float) -> None:
    """Record a crash as far as the storage allows; the original error is what the user sees."""
    message = f"{type(e).__name__}: {e}"
    trace = traceback.format_exc()
    with contextlib.suppress(StorageError):
        if not isinstance(e, StorageError):
            writer.write(EventLogged(*where, "error", FAILED, message, t))
    with contextlib.suppress(StorageError):
        writer.close(FAILED, message)
    if isinstance(e, StorageError):
        return  # not a bug: the one-line message says it all, and the disk may be full
    path = writer.directory / "error.txt"
    try:
        path.write_text(trace)
    except OSError:
        path.unlink(missing_ok=True)


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


@contextlib.contextmanager
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
    "RunControls",
    "claim",
    "default_session_name",
    "drive",
    "open_run",
    "stop_on_signals",
]

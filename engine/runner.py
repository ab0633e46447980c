"""Driving a prepared run into a session: the one loop every front end of ``sgdwalk run`` shares.

The headless CLI, the dashboard's worker and a background trainer all do the same thing: claim
the session's name, prepare the run, iterate ``Run.records``, hand each record to the session
writer, pass it on to a display, and turn the way the loop ended into the session's final status.
Keeping it here means the status rules (finished / interrupted / diverged / failed; the mapping of
an exception is ``sgdwalk.control.ending``) are applied in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sgdwalk.config import RunConfig
from sgdwalk.control import ending
from sgdwalk.errors import StorageError
from sgdwalk.records import ENDINGS, FAILED, INTERRUPTED, EventLogged, Record
from sgdwalk.session import SessionWriter
from sgdwalk.session.naming import claim as claim_folder
from sgdwalk.session.naming import release
from sgdwalk.trackers import LogTargets, Trackers, warn_line

if TYPE_CHECKING:
    from sgdwalk.train import Run


def claim(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its session claimed (its folder made exclusively, before any data loads):
    the name given, or DATASET-MODEL-YYYYmmdd-HHMMSS (-2, -3, ... when taken). Raises
    ``SessionError`` for a bad or taken name. Give it back with ``release`` if the run never
    starts (``open_run`` does)."""
    directory = claim_folder(Path(cfg.sessions_dir), cfg.session, f"{cfg.dataset}-{cfg.model}")
    return dataclasses.replace(cfg, session=directory.name)


def session_of(cfg: RunConfig) -> Path:
    """The folder of a claimed config's session."""
    assert cfg.session is not None, "claim(cfg) first"
    return Path(cfg.sessions_dir) / cfg.session


def open_run(cfg: RunConfig) -> tuple[Run, SessionWriter]:
    """Prepare a claimed run in this process and open its session writer; the claim is given
    back when either fails."""
    from sgdwalk.train import prepare

    directory = session_of(cfg)
    try:
        run = prepare(cfg)
        return run, SessionWriter(directory, cfg.as_dict(), run.info, claimed=True)
    except BaseException:
        release(directory)
        raise


def drive(
    records: Iterator[Record],
    writer: SessionWriter,
    on_record: Callable[[Record], None] | None = None,
    log_to: LogTargets | None = None,
) -> str:
    """Write every record to the session (and ``on_record``, and the trackers of ``log_to``);
    close it with the final status.

    The status is the kind of the last ending event the run yielded (finished, interrupted,
    diverged); a loop that stops without one was interrupted. Ctrl+C inside the loop ends it
    interrupted; any other exception writes a ``failed`` event, marks the session failed, keeps
    the traceback in ``error.txt`` beside it (when the disk allows) and goes on up. A tracker
    that fails is a warning event (in the session, and to ``on_record``), never the run's end.
    """
    status, message, where = INTERRUPTED, "stopped without an ending", (0, 0)
    started = time.monotonic()
    warnings: list[str] = []
    trackers = Trackers(log_to, writer.directory.name, strict=False, start_wandb=True,
                        warn=warnings.append)  # fmt: skip
    try:
        for rec in records:
            writer.write(rec)
            trackers.record(rec)
            where = (getattr(rec, "step", where[0]), getattr(rec, "epoch", where[1]))
            if isinstance(rec, EventLogged) and rec.kind in ENDINGS:
                status, message = rec.kind, rec.message
            if on_record is not None:
                on_record(rec)
            while warnings:  # a tracker's failure, said where the run's other warnings are
                note = EventLogged(*where, "warning", "warning", warnings.pop(0),
                                   time.monotonic() - started)  # fmt: skip
                writer.write(note)
                if on_record is not None:
                    on_record(note)
    except KeyboardInterrupt as e:
        writer.close(*ending(e))
        return INTERRUPTED
    except BaseException as e:
        _failed(writer, e, where, time.monotonic() - started)
        raise
    finally:
        trackers.warn = warn_line  # the session may be closed: a last failure goes to stderr
        trackers.close()
    writer.close(status, message)
    return status


def _failed(writer: SessionWriter, e: BaseException, where: tuple[int, int], t: float) -> None:
    """Record a crash as far as the storage allows; the original error is what the user sees."""
    status, message = ending(e)
    trace = traceback.format_exc()
    with contextlib.suppress(StorageError):
        if not isinstance(e, StorageError):
            writer.write(EventLogged(*where, "error", FAILED, message, t))
    with contextlib.suppress(StorageError):
        writer.close(status, message)
    if isinstance(e, StorageError):
        return  # not a bug: the one-line message says it all, and the disk may be full
    path = writer.directory / "error.txt"
    try:
        path.write_text(trace)
    except OSError:
        path.unlink(missing_ok=True)


__all__ = ["claim", "drive", "open_run", "session_of"]

"""The Walker's session: its folder claimed when the Walker is made, the file opened when the
loop is attached (its config names the optimiser), every record written, an ``EpochEnded`` for
each epoch the loop leaves, and one ending event with the final status. Under torch.distributed
rank 0 alone writes it; the other ranks hold a session that writes nothing.

Why a session that cannot be made stops nothing: a taken name (a script rerun with a fixed
``session=``), a second Walker under one ``sgdwalk exec``, a read-only or full sessions folder
are found when the Walker is made or attached, which for a script is training's start. They are
one ``sgdwalk: not measuring, ...`` line on stderr, and the Walker measures nothing (on rank 0 of
several it measures on, writing nothing, so the ranks' collectives stay in step). A folder this
Walker claimed and a file it began are given back, so nothing half-made is left.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgdwalk.control import Controls, hold
from sgdwalk.errors import SgdwalkError, StorageError
from sgdwalk.instrument import Instrument
from sgdwalk.records import FAILED, EventLogged, Record
from sgdwalk.session import SessionWriter
from sgdwalk.session.naming import SESSION_ENV, SESSIONS_ENV, adopt, claim, release, taken
from sgdwalk.session.schema import DB_NAME
from sgdwalk.trackers import LogTargets, Trackers

_ADOPTED: set[Path] = set()  # folders `sgdwalk exec` named that a Walker here has taken


def say(line: str) -> None:
    """One line on stderr for the user of a script (a closed stderr is no failure)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"sgdwalk: {line}", file=sys.stderr, flush=True)


class WalkerSession:
    """Where a Walker's records go: ``directory`` (claimed; None on a rank that does not write,
    or when no session could be made)."""

    def __init__(self, directory: Path | None, clock: Callable[[], float]) -> None:
        self.directory, self.clock = directory, clock
        self.writer: SessionWriter | None = None
        self.trackers = Trackers(None)  # where the records' scalars go too (``track``)
        self.failed = False  # no session could be made: said on stderr, nothing written
        self.epoch, self.epoch_start = 1, 0  # the epoch being recorded, and its first step - 1
        self._lock = threading.RLock()  # the stepping thread, another thread's word, the end
        if directory is not None:  # a Walker dropped, or alive at exit, unattached: no folder
            weakref.finalize(self, _unused, directory, os.getpid())

    @classmethod
    def claim(cls, session: str | None, sessions_dir: str | os.PathLike[str] | None, model: str,
              leader: bool, clock: Callable[[], float]) -> WalkerSession:  # fmt: skip
        """The session of a Walker made now: its folder claimed (``session_folder``) on the rank
        that writes (``leader``); ``failed`` when it cannot be had."""
        if not leader:
            return cls(None, clock)
        try:
            return cls(session_folder(session, sessions_dir, model), clock)
        except SgdwalkError as e:
            out = cls(None, clock)
            out.fail(e)
            return out

    @property
    def pending(self) -> bool:
        """Whether the file is still to be made (a folder claimed, no writer yet)."""
        return self.writer is None and self.directory is not None

    def open(self, describe: Callable[[], tuple[dict[str, Any], dict[str, Any]]]) -> bool:
        """Create the session file in the claimed folder, with the config and info ``describe``
        gives (asked only then: it reads library versions); True when this call created it. A
        file it began and could not finish (a full disk) is removed again, and ``failed``."""
        if not self.pending or self.directory is None:
            return False
        try:
            self.writer = SessionWriter(self.directory, *describe(), claimed=True)
        except StorageError as e:  # the file was this call's (a taken one is a SessionError)
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    (self.directory / (DB_NAME + suffix)).unlink()
            self.fail(e)
            return False
        except SgdwalkError as e:  # taken meanwhile, by another process
            self.fail(e)
            return False
        return True

    def fail(self, e: SgdwalkError) -> None:
        """No session after all: said once, and the folder goes back (holding no session)."""
        say(f"not measuring, training goes on: {e}")
        self.failed = True
        self.give_back()

    def give_back(self) -> None:
        directory, self.directory = self.directory, None
        if directory is not None:
            _ADOPTED.discard(directory)
            if self.writer is None:
                release(directory)

    def track(self, log_to: str | list[str] | None) -> None:
        """Send every record's scalars to the trackers of ``log_to`` too (``sgdwalk.trackers``;
        a failure while logging is one warning, never training's end). One that cannot be made
        is the Walker's ``ConfigError``, and the folder goes back. Nothing without a session."""
        if self.directory is None or not log_to:
            return
        try:
            self.trackers = Trackers(LogTargets.parse(log_to, "Walker: log_to"),
                                     self.directory.name)  # fmt: skip
        except SgdwalkError:
            self.give_back()
            raise

    def write(self, rec: Record) -> None:
        with self._lock:
            if self.writer is None:
                return
            self.writer.write(rec)
            self.trackers.record(rec)
        if isinstance(rec, EventLogged) and rec.level == "warning":
            say(f"warning: {rec.message}")

    def event(self, step: int, epoch: int, level: str, kind: str, message: str) -> None:
        self.write(EventLogged(step, epoch, level, kind, message, self.clock()))  # type: ignore[arg-type]

    def hold(self, controls: Controls, step: int, epoch: int) -> None:
        """Hold the loop while a pause is asked for, saying so (``sgdwalk.control.hold``)."""
        for event in hold(controls, step, epoch, self.clock):
            self.write(event)

    def epoch_boundary(self, instrument: Instrument, step: int, epoch: int) -> None:
        """When the loop is now in ``epoch`` after ``step`` steps: the ``EpochEnded`` of the
        epoch it left (none when that epoch had no step)."""
        if epoch == self.epoch:
            return
        left, self.epoch = self.epoch, epoch
        if step == self.epoch_start:
            return
        self.epoch_start = step
        self.write(instrument.epoch_ended(left, step))

    def end(self, status: str, message: str, step: int, epoch: int,
            epoch_ended: Callable[[int, int], Record]) -> None:  # fmt: skip
        """The last epoch's record (``epoch_ended(epoch, step)``, when it had steps), the ending
        event and the final status (idempotent via the writer). A folder that never got a
        session is given back."""
        with self._lock:
            if self.writer is None:
                self.give_back()
                self.trackers.close()
                return
            _ADOPTED.discard(self.writer.directory)
            message = message or f"{status} after {step} steps"
            if step != self.epoch_start:
                with contextlib.suppress(Exception):
                    self.write(epoch_ended(self.epoch, step))
            try:
                self.event(step, epoch, "error" if status == FAILED else "info", status, message)
            finally:
                self.writer.close(status, message)
                self.trackers.close()

    def keep_traceback(self, e: BaseException) -> None:
        """``error.txt`` in the session: the traceback of a failure inside the Walker (as
        ``sgdwalk run`` keeps a crash's); not for storage failures, whose line says it all."""
        if self.writer is None or isinstance(e, StorageError):
            return
        path = self.writer.directory / "error.txt"
        try:
            path.write_text("".join(traceback.format_exception(e)))
        except OSError:
            path.unlink(missing_ok=True)


def _unused(directory: Path, pid: int) -> None:
    if os.getpid() == pid:  # (never in a forked child: the folder is its parent's)
        release(directory)


def session_folder(session: str | None, sessions_dir: str | os.PathLike[str] | None,
                   model: str) -> Path:  # fmt: skip
    """The session's folder, claimed now. Under ``sgdwalk exec`` (``$SGDWALK_SESSION`` set) the dashboard waits on the name and folder
    it claimed, so they win over the script's arguments, and only the first Walker of the
    process takes them; otherwise the ``session`` argument, or MODELCLASS-YYYYmmdd-HHMMSS, in
    ``sessions_dir``, else ``$SGDWALK_SESSIONS``, else ``./sessions``. Raises ``SessionError``
    or ``StorageError`` (the caller says so and measures nothing)."""
    from sgdwalk.session.naming import sessions_folder

    exec_name = os.environ.get(SESSION_ENV)
    if exec_name:
        folder = sessions_folder(os.environ.get(SESSIONS_ENV) or sessions_dir)
        directory = folder / exec_name
        if directory in _ADOPTED:
            raise taken(exec_name, folder, "session=")
        directory = adopt(directory, "session=")
        _ADOPTED.add(directory)
        return directory
    return claim(sessions_folder(sessions_dir), session, model, "session=")

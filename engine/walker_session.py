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
from typing import TYPE_CHECKING, Any

from sgdwalk.control import Controls, hold
from sgdwalk.errors import SgdwalkError, StorageError
from sgdwalk.instrument import Instrument
from sgdwalk.records import FAILED, NOTE_EVENT, SKIPPED_EVENT, EventLogged, Record
from sgdwalk.session import SessionWriter
from sgdwalk.session.naming import SESSION_ENV, SESSIONS_ENV, adopt, claim, release, taken
from sgdwalk.session.schema import DB_NAME
from sgdwalk.walker_parts import Hooks, optimizer_params

if TYPE_CHECKING:
    from sgdwalk.shard import Peers
    from sgdwalk.walker import Walker
    from sgdwalk.walker_guard import ScriptGuard
    from sgdwalk.walker_steps import Steps

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

    def open(self, config: dict[str, Any], info: dict[str, Any]) -> bool:
        """Create the session file in the claimed folder; True when this call created it. A
        file it began and could not finish (a full disk) is removed again, and ``failed``."""
        if self.writer is not None or self.directory is None:
            return False
        try:
            self.writer = SessionWriter(self.directory, config, info, claimed=True)
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

    def write(self, rec: Record) -> None:
        with self._lock:
            if self.writer is None:
                return
            self.writer.write(rec)
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


class Life:
    """A Walker's life: its session opened when the loop is attached, standing down when no
    session can be had (it measures nothing, said once), given up on a failure inside it, closed
    at the end; and who may act at all (the process that made it, the thread whose steps it
    measures: ``sgdwalk.walker_guard.Owner``)."""

    def __init__(self, record: WalkerSession, steps: Steps, hooks: Hooks, guard: ScriptGuard,
                 peers: Peers | None) -> None:  # fmt: skip
        self.record, self.steps, self.hooks, self.guard = record, steps, hooks, guard
        self.peers = peers
        self.closed = self.inert = False
        if record.failed:
            self.stand_down()

    def acts(self) -> bool:
        """Whether the Walker acts here: open, and in the process that made it."""
        return not self.closed and self.guard.owner.here()

    def steps_here(self) -> bool:
        """Whether a step moment in this thread is measured."""
        return not self.closed and self.guard.owner.steps_here()

    def warn(self, message: str) -> None:
        self.steps.event(message, "warning", "warning")

    def scaler_skipped(self, message: str) -> None:
        if self.steps_here():
            self.steps.event(message, SKIPPED_EVENT)

    def open(self, describe: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
             notes: list[str]) -> None:  # fmt: skip
        """The session file, made at the first call (with ``notes``), or standing down."""
        if self.closed:
            return
        opened = self.record.open(*describe())
        if self.record.failed:  # taken meanwhile (another process), a full or read-only disk
            self.stand_down()
        elif opened:
            self.guard.install()
            for note in notes:
                self.steps.event(note, NOTE_EVENT)

    def stand_down(self) -> None:
        """No session (said): nothing is measured, except on rank 0 of several, which measures
        on, writing nothing, so that the ranks' collectives stay in step."""
        if self.peers is None:
            self.closed = self.inert = True
            self.hooks.remove()
            self.guard.remove()

    def close(self, status: str, message: str) -> None:
        """End the session; every hook and handler off. Idempotent; nothing in a forked child
        (the session is its parent's)."""
        if not self.acts():
            return
        self.closed = True
        self.hooks.remove()
        self.guard.remove()
        try:
            self.steps.close(status, message)
        finally:
            if self.peers is not None:
                self.peers.close()

    def give_up(self, e: Exception) -> None:
        """A failure inside the Walker: one line on stderr, the traceback in the session's
        ``error.txt``, the session ends failed, training goes on unmeasured."""
        cause = str(e) if isinstance(e, StorageError) else f"{type(e).__name__}: {e}"
        say(f"measuring stopped, training goes on: {cause}")
        try:
            self.record.keep_traceback(e)
            self.close(FAILED, cause)
        except Exception:  # noqa: BLE001 - the session may be what failed; training goes on
            self.closed = True
            self.hooks.remove()
            self.guard.remove()


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


def describe(w: Walker) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Walker session's config (what the science depends on) and info (sizes, device)."""
    opt = w.optimizer
    hyper = optimizer_params(opt) if opt is not None else {}
    loss = "cross-entropy" if w.loss_fn is None else getattr(w.loss_fn, "__name__", "custom")
    config = {
        "source": "walker", "model": type(w.module).__name__,
        "dataset": str(w.meta.get("dataset", "custom")),
        "optimizer": type(opt).__name__ if opt is not None else None, "optimizer_params": hyper,
        "lr": hyper.get("lr"), "momentum": hyper.get("momentum"),
        "weight_decay": hyper.get("weight_decay"), "batch_size": w.batch_size, "loss": loss,
        "meta": w.meta, **w.settings.as_dict(), "probe": w.probe.size,
        "budget": w.budget.fraction if w.budget is not None else None,
    }  # fmt: skip
    peers = w.probe.peers
    info = w.instrument.info(w.module, w.evaluator.flat.device, 1 if peers is None else peers.world)
    return config, info | {"batch_size": w.batch_size, "total_steps": w.total_steps}

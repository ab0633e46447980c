"""The loop's updates as a Walker follows them: which step is open, what a skipped one is, and the
Instrument's moments around each one.

Why apart from the Walker: the Walker wires a user's objects (optimiser hooks, the model's loss,
a GradScaler, signals, the session's life); this is what happens at the two moments it is called,
in order: a pause is held, a left epoch is recorded, a curvature pass runs when the schedule asks
(θ_0 before the first update, as the built-in trainer does), the time budget picks the measured
steps, and the step's records reach the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from sgdwalk.control import Controls
from sgdwalk.errors import ConfigError, StorageError
from sgdwalk.instrument import Instrument
from sgdwalk.records import FAILED, NOTE_EVENT, SKIPPED_EVENT, Record
from sgdwalk.walker_parts import Hooks, LoopTap
from sgdwalk.walker_progress import ProgressLine
from sgdwalk.walker_session import WalkerSession, say

if TYPE_CHECKING:
    from sgdwalk.shard import Peers
    from sgdwalk.walker_guard import ScriptGuard


class Steps:
    """``begin`` after backward, ``end`` after ``optimizer.step()``; ``skip`` when the update
    begun was not taken. ``step`` counts updates taken; ``epoch`` is the loop's (from 1)."""

    def __init__(
        self, module: nn.Module, instrument: Instrument, record: WalkerSession,
        controls: Controls, tap: LoopTap, batch_size: int | None, progress: ProgressLine,
    ) -> None:  # fmt: skip
        self.module, self.instrument, self.record = module, instrument, record
        self.controls, self.tap, self.batch_size = controls, tap, batch_size
        self.progress = progress  # the line on stderr, when a terminal shows it
        self.step, self._epoch = 0, 1
        self.last_epoch = 1  # the epoch of the last update taken (a pause after it names it)
        self.said_batch = False
        self.open = False  # begun and not yet ended

    @property
    def epoch(self) -> int:
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"Walker: epoch: must be a whole number from 1, got {value!r}")
        self._epoch = value

    def begin(self) -> None:
        """θ_t and the gradient the update will use (a step begun and never ended: skipped)."""
        if self.open:
            self.skip("inf/NaN gradients")
        self.record.hold(self.controls, self.step, self.last_epoch)
        self.record.epoch_boundary(self.instrument, self.step, self.epoch)
        if self.step == 0 and self.instrument.curvature_due("steps", 0):
            self._curvature_pass()
        self.step += 1
        self.open = True
        self.instrument.before_update(self.module, self.step, self._batch())

    def _batch(self) -> Callable[[], Any] | None:
        """The step's reported examples as the evaluator's chunks, for batch sharpness (asked
        only when it is measured); without them, said once, and the value is left out."""
        if not self.instrument.settings.batch_sharpness:
            return None
        batch = self.tap.batch
        if batch is None:
            if not self.said_batch:
                self.said_batch = True
                self.event("batch sharpness needs the step's examples: walker.report(loss, "
                           "batch=...) before optimizer.step()", NOTE_EVENT)  # fmt: skip
            return None
        return lambda: self.instrument.probe.chunks_of(batch)

    def skip(self, why: str) -> None:
        """The update begun was not taken: recorded as skipped, not measured as a zero move."""
        if not self.open:
            return
        self.open = False
        self.step -= 1
        self.instrument.discard()
        self.event(f"the update after step {self.step} was skipped ({why}): not measured",
                   SKIPPED_EVENT)  # fmt: skip

    def end(self) -> None:
        """The update taken: its records, and a curvature pass when one is due."""
        self.open = False
        self.last_epoch = self.epoch
        batch_loss, size = self.tap.take()
        records = self.instrument.after_update(self.module, self.step, self.epoch,
                                               size or self.batch_size or 0, batch_loss)  # fmt: skip
        for rec in records:
            self._write(rec)
        if self.instrument.curvature_due("steps", self.step):
            self._curvature_pass()

    def event(self, message: str, kind: str, level: str = "info") -> None:
        """An event at the current step (a ``warning`` event is also a line on stderr)."""
        self.progress.clear()
        self.record.event(self.step, self.epoch, level, kind, message)

    def close(self, status: str, message: str) -> None:
        """The session's end: the last epoch, the ending event, the status."""
        self.progress.clear()
        self.record.end(status, message, self.step, self.epoch, self.instrument.epoch_ended)

    def _curvature_pass(self) -> None:
        for rec in self.instrument.curvature_pass(self.module, self.step, self.epoch):
            self._write(rec)

    def _write(self, rec: Record) -> None:
        self.record.write(rec)
        self.progress.show(rec)


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
        opened = self.record.open(describe)
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

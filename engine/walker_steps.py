"""The loop's updates as a Walker follows them: which step is open, what a skipped one is, and the
Instrument's moments around each one.

Why apart from the Walker: the Walker wires a user's objects (optimiser hooks, the model's loss,
a GradScaler, signals, the session's life); this is what happens at the two moments it is called,
in order: a pause is held, a left epoch is recorded, a curvature pass runs when the schedule asks
(θ_0 before the first update, as the built-in trainer does), the time budget picks the measured
steps, and the step's records reach the session.
"""

from __future__ import annotations

import time

from torch import nn

from sgdwalk.control import Controls
from sgdwalk.errors import ConfigError
from sgdwalk.instrument import Instrument
from sgdwalk.records import SKIPPED_EVENT
from sgdwalk.walker_parts import Budget, LoopTap
from sgdwalk.walker_session import WalkerSession


class Steps:
    """``begin`` after backward, ``end`` after ``optimizer.step()``; ``skip`` when the update
    begun was not taken. ``step`` counts updates taken; ``epoch`` is the loop's (from 1)."""

    def __init__(
        self, module: nn.Module, instrument: Instrument, record: WalkerSession,
        controls: Controls, tap: LoopTap, budget: Budget | None, batch_size: int | None,
    ) -> None:  # fmt: skip
        self.module, self.instrument, self.record = module, instrument, record
        self.controls, self.tap, self.budget, self.batch_size = controls, tap, budget, batch_size
        self.step, self._epoch = 0, 1
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
        self.record.hold(self.controls, self.step, self.epoch)
        self.record.epoch_boundary(self.instrument, self.step, self.epoch)
        if self.step == 0 and self.instrument.curvature_due("steps", 0):
            self._curvature_pass()
        self.step += 1
        self.open = True
        if self.budget is not None:
            self.budget.follow(self.instrument, self.instrument.probe.peers)
        self.instrument.before_update(self.module, self.step)

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
        batch_loss, size = self.tap.take()
        records = self.instrument.after_update(self.module, self.step, self.epoch,
                                               size or self.batch_size or 0, batch_loss)  # fmt: skip
        for rec in records:
            self.record.write(rec)
        if self.budget is not None:
            self.budget.measured(self.instrument.meter.due(self.step))
        if self.instrument.curvature_due("steps", self.step):
            self._curvature_pass()

    def event(self, message: str, kind: str, level: str = "info") -> None:
        """An event at the current step (a ``warning`` event is also a line on stderr)."""
        self.record.event(self.step, self.epoch, level, kind, message)

    def close(self, status: str, message: str) -> None:
        """The session's end: the last epoch, the ending event, the status."""
        self.record.end(status, message, self.step, self.epoch, self.instrument.epoch_ended)

    def _curvature_pass(self) -> None:
        started = time.perf_counter()
        for rec in self.instrument.curvature_pass(self.module, self.step, self.epoch):
            self.record.write(rec)
        if self.budget is not None:  # a pass is neither measuring a step nor training
            self.budget.left_out(time.perf_counter() - started)

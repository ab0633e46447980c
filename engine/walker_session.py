"""The Walker's session: opened at the first step (by rank 0 alone under torch.distributed), every
record written, an ``EpochEnded`` for each epoch the loop leaves (barriers and interior minima, as
the built-in trainer records them), and one ending event with the final status."""

from __future__ import annotations

import contextlib
import math
from typing import Any

from sgdwalk.records import FAILED, EpochEnded, EventLogged, Record, StepMeasured
from sgdwalk.session import SessionWriter
from sgdwalk.train import Tally
from sgdwalk.walker_parts import describe


class WalkerSession:
    """Where a Walker's records go. ``walker`` gives the step, the epoch and the clock."""

    def __init__(self, walker: Any, writes: bool) -> None:
        self.walker, self.writes = walker, writes
        self.writer: SessionWriter | None = None
        self.tally, self.epoch, self.epoch_start = Tally(), 1, 0
        self.probe_loss = math.nan  # L_P at the last measured step's end

    def open(self) -> bool:
        """Create the session file; True when this call created it."""
        if self.writer is not None or not self.writes:
            return False
        config, info = describe(self.walker)
        self.writer = SessionWriter(self.walker.directory, config, info)
        return True

    def write(self, rec: Record) -> None:
        if self.writer is not None:
            self.writer.write(rec)

    def event(self, level: str, kind: str, message: str) -> None:
        w = self.walker
        self.write(EventLogged(w.step, w.epoch, level, kind, message,  # type: ignore[arg-type]
                               w.meter.elapsed()))  # fmt: skip

    def stepped(self, rec: StepMeasured) -> None:
        self.write(rec)
        self.tally.add(rec)
        if rec.measured and rec.slice:
            self.probe_loss = rec.slice[-1]

    def end_epoch(self) -> None:
        """The epoch the loop just left: its barriers and interior minima, and the probe loss at
        its last measured step (the Walker runs no validation: NaN there)."""
        w = self.walker
        tally, self.tally = self.tally, Tally()
        epoch, self.epoch = self.epoch, w.epoch
        if w.step == self.epoch_start:
            return
        self.epoch_start = w.step
        nan = math.nan
        self.write(EpochEnded(epoch=epoch, steps=w.step, train_loss=self.probe_loss,
                              train_acc=nan, val_loss=nan, val_acc=nan, barriers=tally.barriers,
                              interior_min_fraction=tally.interior_fraction))  # fmt: skip

    def end(self, status: str, message: str) -> None:
        """The last epoch, the ending event, and the final status (idempotent via the writer)."""
        if self.writer is None:
            return
        w = self.walker
        message = message or f"{status} after {w.step} steps"
        with contextlib.suppress(Exception):
            self.end_epoch()
        try:
            self.write(EventLogged(w.step, w.epoch, "error" if status == FAILED else "info",
                                   status, message, w.meter.elapsed()))  # type: ignore[arg-type]  # fmt: skip
        finally:
            self.writer.close(status, message)

"""The Walker's session: its folder claimed when the Walker is made, the file opened when the
loop is attached (its config names the optimiser), every record written, an ``EpochEnded`` for
each epoch the loop leaves, and one ending event with the final status. Under torch.distributed
rank 0 alone writes it; the other ranks hold a session that writes nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgdwalk.control import Controls, hold
from sgdwalk.instrument import Instrument
from sgdwalk.records import FAILED, EventLogged, Record
from sgdwalk.session import SessionWriter
from sgdwalk.session.naming import release


class WalkerSession:
    """Where a Walker's records go: ``directory`` (claimed; None on a rank that does not write)."""

    def __init__(self, directory: Path | None, clock: Callable[[], float]) -> None:
        self.directory, self.clock = directory, clock
        self.writer: SessionWriter | None = None
        self.epoch, self.epoch_start = 1, 0  # the epoch being recorded, and its first step - 1

    def open(self, config: dict[str, Any], info: dict[str, Any]) -> bool:
        """Create the session file in the claimed folder; True when this call created it."""
        if self.writer is not None or self.directory is None:
            return False
        self.writer = SessionWriter(self.directory, config, info, claimed=True)
        return True

    def write(self, rec: Record) -> None:
        if self.writer is not None:
            self.writer.write(rec)

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
        if self.writer is None:
            if self.directory is not None:
                release(self.directory)
            return
        message = message or f"{status} after {step} steps"
        if step != self.epoch_start:
            with contextlib.suppress(Exception):
                self.write(epoch_ended(self.epoch, step))
        try:
            self.event(step, epoch, "error" if status == FAILED else "info", status, message)
        finally:
            self.writer.close(status, message)

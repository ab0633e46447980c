"""The Walker's one line on stderr: what it is doing, while a person watches the script.

Why: a script with a Walker may spend minutes in a curvature pass between two steps, and a user
who sees nothing for minutes kills it. So, when stderr is a terminal (never in a log or a pipe:
the session holds everything), one line is rewritten in place at most twice a second:

    sgdwalk: step 1,200 · 96 measured (8%) · watching +41% · curvature 12/63

the measured share, what watching has cost the loop so far (the Instrument's seconds over the
loop's own: +41% is 1.41x), and a curvature pass's progress while one runs. The line is cleared
when the Walker closes, so the script's own output is never left behind a half line.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from sgdwalk.budget import Budget
from sgdwalk.records import PhaseProgressed, Record, StepMeasured

EVERY = 0.5  # seconds between two rewrites of the line


class ProgressLine:
    """``show(rec)`` for each record the Walker writes; ``clear()`` when it closes."""

    def __init__(self, clock: Any, stream: TextIO | None = None) -> None:
        """``clock()``: the Instrument's budget (its seconds and the loop's), or None."""
        self.stream = sys.stderr if stream is None else stream
        try:
            self.on = self.stream.isatty()
        except (AttributeError, ValueError):  # a replaced or closed stderr
            self.on = False
        self.clock = clock
        self.step = self.measured = 0
        self.phase = ""
        self._next = 0.0
        self._shown = False

    def show(self, rec: Record) -> None:
        if not self.on:
            return
        if isinstance(rec, StepMeasured):
            self.step = rec.step
            self.measured += rec.measured
            self.phase = ""
        elif isinstance(rec, PhaseProgressed):
            self.phase = f"{rec.phase} {rec.done}/{rec.total}"
        else:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + EVERY
            self._write(f"\r{self.text()}\x1b[K")

    def text(self) -> str:
        parts = [f"sgdwalk: step {self.step:,}"]
        if self.step:
            share = self.measured / self.step
            parts.append(f"{self.measured:,} measured ({share:.{1 if share < 0.1 else 0}%})")
        budget: Budget | None = self.clock()
        if budget is not None and budget.training > 0:
            parts.append(f"watching +{budget.overhead:.0%}")
        if self.phase:
            parts.append(self.phase)
        return " · ".join(parts)

    def clear(self) -> None:
        if self.on and self._shown:
            self._write("\r\x1b[K")
            self._shown = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
            self._shown = True
        except (OSError, ValueError):  # the terminal is gone: training goes on, quietly
            self.on = False

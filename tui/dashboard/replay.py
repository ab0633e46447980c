"""Replay's source of records: a cursor over a saved session that plays, pauses and seeks.

Why it is shaped so: a session may hold 100,000 steps or more, so nothing here loads the whole
history. A seek reads the window the panels draw (``TRAIL`` steps ending at the cursor) through the
indexed ``Session.steps(start, stop)``; epochs, curvature records and events are few (one per epoch
or per schedule) and are read once. Like the run and watch sources, this one only hands out
records: a seek returns a ``History`` and a frame the records between two frames, and the screen
puts them into its own buffers (the ones run and watch fill). Frames are paced by the steps'
recorded ``elapsed`` times (1x = as it trained, without the waits for curvature passes, which the
event log marks with their length).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from sgdwalk.records import CurvatureMeasured, EpochEnded, EventLogged, StepMeasured
from sgdwalk.session import Session
from sgdwalk.tui.dashboard.buffers import TRAIL, History

SPEEDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))
MAX_SPEED = float("inf")  # every step drawn, frames back to back
FRAME_STEPS_CAP = 2_000  # most steps one paced frame reads


@dataclass(frozen=True)
class Bounds:
    first: int
    last: int


class ReplaySource:
    """Position (``cursor``), speed and play state of a replay; ``seek`` reads a position's
    history, ``frame`` the records played since the last frame."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.name = session.name
        self.info = session.info
        self.status = session.status
        self.message = session.message
        first = next(session.steps(), None)
        self.bounds = Bounds(first.step if first else 0, session.last_step())
        self.epochs: list[EpochEnded] = list(session.epochs())
        self.curvature: list[CurvatureMeasured] = list(session.curvature())
        self.events: list[EventLogged] = list(session.events())
        self._epoch_ends = [e.steps for e in self.epochs]
        self.cursor = self.bounds.first
        self.epoch = first.epoch if first else 0
        self.clock = first.elapsed if first else 0.0
        self.speed_index = 0
        self.playing = False
        # training waited for each curvature pass; "as recorded" speeds jump over those gaps
        passes = sorted((c.step, c.seconds) for c in self.curvature if c.seconds)
        self._pass_steps = [at for at, _ in passes]
        self._pass_secs = [sec for _, sec in passes]
        self._jumped_to = self.cursor  # passes after steps before this are behind the clock

    # -- positions

    @property
    def speed(self) -> float:
        return SPEEDS[self.speed_index]

    @property
    def at_end(self) -> bool:
        return self.cursor >= self.bounds.last

    def clamp(self, step: int) -> int:
        return max(self.bounds.first, min(self.bounds.last, step))

    def epoch_start(self, epoch: int) -> int | None:
        """First step of ``epoch``, from the epoch summaries (or the step rows past the last one)."""
        if epoch < 1:
            return None
        if epoch == 1:
            return self.bounds.first
        if epoch - 2 < len(self._epoch_ends):
            start = self._epoch_ends[epoch - 2] + 1
            return start if start <= self.bounds.last else None
        return None

    def epoch_of(self, step: int) -> int:
        """Epoch that holds ``step``: the first epoch whose summary count reaches it."""
        i = bisect.bisect_left(self._epoch_ends, step)
        return i + 1

    # -- seeking

    def seek(self, step: int) -> History:
        """Move to ``step``; every panel's data there, read with indexed reads only."""
        self.cursor = self.clamp(step)
        window = list(self.session.steps(max(self.bounds.first, self.cursor - TRAIL + 1),
                                         self.cursor + 1))  # fmt: skip
        cur = window[-1] if window else None
        self.epoch = cur.epoch if cur else self.epoch_of(self.cursor)
        self.clock = cur.elapsed if cur else 0.0
        self._jumped_to = self.cursor
        return History(
            steps=tuple(window),
            epochs=tuple(e for e in self.epochs if e.steps <= self.cursor),
            curvature=tuple(c for c in self.curvature if c.step <= self.cursor),
            events=tuple(ev for ev in self.events if ev.step <= self.cursor),
            epoch_barriers=self._epoch_barriers(window),
        )

    def _epoch_barriers(self, window: list[StepMeasured]) -> int:
        """Barriers so far in the cursor's epoch that are not in a finished-epoch summary."""
        if any(e.epoch == self.epoch for e in self.epochs if e.steps <= self.cursor):
            return 0
        in_window = sum(bool(s.barrier) for s in window if s.epoch == self.epoch)
        start = self.epoch_start(self.epoch)
        if not window or start is None or start >= window[0].step:
            return in_window
        before = self.session.steps(start, window[0].step)
        return in_window + sum(bool(s.barrier) for s in before if s.epoch == self.epoch)

    # -- playing

    def frame(self, dt: float) -> list[object]:
        """Records between this frame and the last one, in order; advances the cursor."""
        if not self.playing or self.at_end:
            self.playing = False
            return []
        if self.speed == MAX_SPEED:
            steps = list(self.session.steps(self.cursor + 1, self.cursor + 2))
        else:
            self.clock += self.speed * dt
            steps = []
            for s in self.session.steps(self.cursor + 1, self.cursor + 1 + FRAME_STEPS_CAP):
                self.clock += self._pass_time(s.step)
                if s.elapsed > self.clock:
                    break
                steps.append(s)
            if len(steps) == FRAME_STEPS_CAP:
                self.clock = steps[-1].elapsed
        if not steps:
            return []
        return self._advance_to(steps)

    def _pass_time(self, step: int) -> float:
        """Seconds of curvature passes between the last step jumped to and ``step`` (each
        counted once): training waited for them, a replay need not."""
        lo, self._jumped_to = self._jumped_to, max(self._jumped_to, step)
        a = bisect.bisect_left(self._pass_steps, lo)
        b = bisect.bisect_left(self._pass_steps, step)
        return sum(self._pass_secs[a:b])

    def _advance_to(self, steps: list[StepMeasured]) -> list[object]:
        lo, hi = self.cursor, steps[-1].step
        self.cursor, self.epoch = hi, steps[-1].epoch
        others: list[tuple[tuple[int, int], object]] = [((s.step, 0), s) for s in steps]
        others += [((e.steps, 1), e) for e in self.epochs if lo < e.steps <= hi]
        others += [((c.step, 2), c) for c in self.curvature if lo < c.step <= hi]
        others += [((v.step, 3), v) for v in self.events if lo < v.step <= hi]
        others.sort(key=lambda kv: kv[0])
        if self.at_end:
            self.playing = False
        return [rec for _, rec in others]

    def toggle(self) -> None:
        if self.at_end and not self.playing:
            return
        self.playing = not self.playing

    def faster(self) -> None:
        self.speed_index = min(len(SPEEDS) - 1, self.speed_index + 1)

    def slower(self) -> None:
        self.speed_index = max(0, self.speed_index - 1)

    def speed_label(self) -> str:
        return "max" if self.speed == MAX_SPEED else f"{self.speed:g}x"


def epoch_jump(cursor: ReplaySource, delta: int) -> int:
    """Where ``]`` (``delta`` 1) and ``[`` (-1) go: the next epoch's first step; back, this epoch's
    first step, then the previous one's; the last or first step past either end."""
    start = cursor.epoch_start(cursor.epoch)
    target = cursor.epoch + delta
    if delta < 0 and start is not None and cursor.cursor > start:
        target = cursor.epoch  # first back to the start of this epoch
    step = cursor.epoch_start(target)
    if step is None:
        step = cursor.bounds.last if delta > 0 else cursor.bounds.first
    return step


def parse_target(text: str, cursor: ReplaySource) -> int:
    """``1234`` → step 1234; ``e3`` or ``epoch 3`` → first step of epoch 3; ``+50``/``-50`` relative.

    Raises ValueError with a message for the status line.
    """
    t = text.strip().lower().replace(" ", "")
    if not t:
        raise ValueError("type a step (1234), an epoch (e3) or a jump (+100, -100)")
    if t.startswith(("epoch", "e")):
        num = t.removeprefix("epoch").removeprefix("e")
        if not num.isdigit():
            raise ValueError(f"not an epoch: {text!r}")
        start = cursor.epoch_start(int(num))
        if start is None:
            raise ValueError(f"epoch {num} is not in this session")
        return start
    if t.startswith(("+", "-")) and t[1:].isdigit():
        return cursor.clamp(cursor.cursor + int(t))
    if t.isdigit():
        return cursor.clamp(int(t))
    raise ValueError(f"not a step or epoch: {text!r}")

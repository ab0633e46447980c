"""A time budget: measuring takes at most a given share of the time training takes.

Why: a measured step costs K forward passes of the probe set, tens of times a training step of a
small batch (the digits MLP: 21 ms against 0.6 ms), and a curvature pass tens of Hessian-vector
products; measured every step, a real loop runs 10 to 110 times slower, and nobody leaves that on.
With ``fraction`` f the Instrument keeps its own seconds to about f times the training's (the
loop's seconds between its calls): it measures a random share p of the steps (``sampling``),

    p = (f · t_train − c_plain) / (c_measured − c_plain),

from smoothed costs (c: the Instrument's seconds on a measured and on an unmeasured step, t_train:
the loop's seconds a step), after setting aside what curvature passes took; while the Instrument
is over its share in all (the first steps, measured while the costs are learnt, and the slice
mode's trials; a pass), the fewest steps are measured until it is back within; a curvature pass
that would take the Instrument past f · (training so far) waits until it fits (said once), and
while the steps get fewer than all they could use, passes take at most ``PASS_SHARE`` of it. The
first steps are measured while the costs are learnt.

``auto`` (``sgdwalk run``'s default): if measuring every step of the whole run would take at most
``AUTO_SECONDS`` (the embedded default: about a minute, the paper's picture of every step), every
step is measured; otherwise the measuring may take the larger of ``AUTO_FRACTION`` of the training
time and what keeps the whole run within ``AUTO_SECONDS``: a run of short steps (the digits MLP
for 60 epochs: 2 s of training) is then watched for 3 minutes, not for 1 s, while a long one costs
at most 1.5x. The choice is made once the first ``AUTO_AFTER`` steps have shown the costs, and
noted; the run's time is projected from the loop's time a step as it goes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

from sgdwalk.sampling import Sampler

AUTO_FRACTION = 0.5  # the default: watching costs at most 1.5x the bare loop
AUTO_SECONDS = 180.0  # a whole run measured every step within this: measure every step
AUTO_AFTER = 16  # steps (and their measured ones) to learn the costs before choosing
MIN_RATE = 1e-3  # the fewest steps measured: one in a thousand
PASS_SHARE = 0.5  # curvature passes take at most this part of the budget while steps want more


def _smooth(old: float, new: float, weight: float = 0.2) -> float:
    return new if math.isnan(old) else (1 - weight) * old + weight * new


class Budget:
    """``fraction`` of the training time for measuring (None with ``auto``: not decided yet, or
    every step); ``total_steps``: the run's, for ``auto``."""

    def __init__(self, fraction: float | None, auto: bool = False,
                 total_steps: int | None = None) -> None:  # fmt: skip
        self.fraction, self.auto, self.total_steps = fraction, auto, total_steps
        self.inside = 0.0  # the Instrument's seconds, in all
        self.training = 0.0  # the loop's seconds, in all
        self.passes = 0.0  # the Instrument's seconds in curvature passes
        self.last_pass = 0.0  # how long the last pass took
        self.steps = 0
        self.cost = {True: math.nan, False: math.nan}  # a measured / unmeasured step's seconds
        self.train = math.nan  # the loop's seconds a step
        self._mark: tuple[float, float] | None = None  # (wall clock, inside) at the step's start
        self._step_inside = 0.0
        self.note = ""  # what ``auto`` chose, once, for the session
        self.within: float | None = None  # ``auto``: seconds the whole run may take, at least
        self.last_rate = 1.0  # the share of steps last asked for

    @property
    def samples(self) -> bool:
        """Whether it decides which steps are measured (a share, or ``auto`` not yet settled);
        otherwise it only keeps the clock (every step, or the user's own schedule)."""
        return self.fraction is not None or self.auto

    @property
    def overhead(self) -> float:
        """The Instrument's seconds per second of training so far (0.4: the loop 1.4x slower)."""
        return self.inside / self.training if self.training > 0 else 0.0

    def spent(self, seconds: float) -> None:
        self.inside += seconds
        self._step_inside += seconds

    def passed(self, seconds: float) -> None:
        """A curvature pass took ``seconds`` (of those ``spent``)."""
        self.passes += seconds
        self.last_pass = seconds

    def step_started(self, now: float | None = None) -> None:
        """A step begins (at ``now``, by ``time.perf_counter``): the loop's time since the last
        one is training."""
        now = time.perf_counter() if now is None else now
        if self._mark is not None:
            loop = max(now - self._mark[0] - (self.inside - self._mark[1]), 0.0)
            self.training += loop
            self.train = _smooth(self.train, loop)
        self._mark = (now, self.inside)
        self.steps += 1

    def step_ended(self, measured: bool) -> None:
        """The step's own seconds (outside passes) are its cost."""
        self.cost[measured] = _smooth(self.cost[measured], self._step_inside)
        self._step_inside = 0.0

    def rate(self) -> float | None:
        """The share of steps to measure from now on (None: every step, or not yet known)."""
        if self.auto and self.fraction is None and self.steps >= AUTO_AFTER:
            self._settle()
        if self.fraction is None or math.isnan(self.train) or math.isnan(self.cost[True]):
            return None
        share = self.share()
        if self.inside > share * self.training:
            return MIN_RATE  # over budget (the first steps, a pass): the fewest until it is paid
        plain = 0.0 if math.isnan(self.cost[False]) else self.cost[False]
        left = share - (self.passes / self.training if self.training > 0 else 0.0)
        extra = self.cost[True] - plain
        self.last_rate = (
            1.0 if extra <= 0 else min(1.0, max(MIN_RATE, (left * self.train - plain) / extra))
        )
        return self.last_rate

    def allows_pass(self) -> bool:
        """Whether a curvature pass (as long as the last) fits the budget now."""
        if self.fraction is None:
            return True
        allowed = self.share() * self.training
        if self.inside + self.last_pass > allowed:
            return False
        # the steps keep their part: passes (2 s each on the digits MLP, 2,000 of its steps)
        # would otherwise take every second the budget frees and leave no step measured
        return self.last_rate >= 1.0 or self.passes + self.last_pass <= PASS_SHARE * allowed

    def share(self) -> float:
        """The measuring's seconds allowed per second of training: the fraction, or under
        ``auto`` more when the whole run (its training projected from the loop's time a step)
        would otherwise end within ``within`` seconds."""
        assert self.fraction is not None
        if self.within is None or not self.total_steps or math.isnan(self.train):
            return self.fraction
        projected = self.training + max(self.total_steps - self.steps, 0) * self.train
        if projected <= 0:
            return self.fraction
        return max(self.fraction, (self.within - projected) / projected)

    def _settle(self) -> None:
        """``auto``: every step when the whole run would be short, else ``AUTO_FRACTION``."""
        self.auto = False
        per_step = (self.train if not math.isnan(self.train) else 0.0) + (
            self.cost[True] if not math.isnan(self.cost[True]) else 0.0)  # fmt: skip
        left = (self.total_steps - self.steps) if self.total_steps else None
        if left is not None and left * per_step + self.inside + self.training <= AUTO_SECONDS:
            self.note = (f"budget auto: every step measured (the whole run about "
                         f"{left * per_step + self.inside + self.training:.0f} s)")  # fmt: skip
            return
        self.fraction, self.within = AUTO_FRACTION, AUTO_SECONDS
        slower = per_step / max(self.train, 1e-9)
        every = (f"every step would make the run {slower:.0f}x slower"
                 + (f", about {left * per_step + self.inside + self.training:.0f} s"
                    if left is not None else ""))  # fmt: skip
        if self.share() > AUTO_FRACTION:
            self.note = (f"budget auto: a random share of steps measured, keeping the whole run "
                         f"within about {AUTO_SECONDS:.0f} s ({every}; --budget off measures "
                         "every step)")  # fmt: skip
            return
        self.note = (f"budget auto: a random share of steps measured, measuring at most "
                     f"{AUTO_FRACTION:.0%} of the training time ({every}; --budget off measures "
                     "every step)")  # fmt: skip


class Pace:
    """The Instrument's clock for its own work, and what the budget decides with it: the share of
    steps the sampler measures, and whether a curvature pass fits. Under torch.distributed every
    rank takes the same decisions (the largest rank's: ``peers.agree_max``), so their collectives
    stay in step."""

    def __init__(self, budget: Budget | None, sampler: Sampler, peers: Any = None) -> None:
        self.budget, self.sampler, self.peers = budget, sampler, peers
        # whether it decides at all: the same on every rank (the settings are), and kept so, for
        # ``auto`` settles on each rank by its own clock, and the ranks' collectives must match
        self.samples = budget is not None and budget.samples
        self._said = False
        self._depth = 0  # blocks of own work open (a client's around the Instrument's)
        self._since = 0.0  # when the outermost began
        self._ended: bool | None = None  # a step's end, told inside a block: counted at its exit

    @contextlib.contextmanager
    def own(self, in_pass: bool = False) -> Iterator[None]:
        """Own work inside the block, counted against the budget. Blocks nest (the Walker's
        hooks around the Instrument's moments), and the outermost counts, so that every second
        the loop waits for sgdwalk is counted once, and never as training."""
        start = time.perf_counter()
        if self._depth == 0:
            self._since = start
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self.budget is not None:
                end = time.perf_counter()
                if in_pass:
                    self.budget.passed(end - start)
                if self._depth == 0:
                    self.budget.spent(end - self._since)
                    if self._ended is not None:
                        self.budget.step_ended(self._ended)
                        self._ended = None

    def step_started(self) -> None:
        if self.budget is None:
            return
        self.budget.step_started(self._since if self._depth else None)
        if not self.samples:
            return
        rate = self.budget.rate()
        if self.peers is not None:
            rate = self.peers.agree_max(1.0 if rate is None else rate)
        if rate is not None:
            self.sampler.set_rate(rate)

    def step_ended(self, measured: bool) -> None:
        if self.budget is None:
            return
        if self._depth:
            self._ended = measured  # (its cost is known when the block ends)
        else:
            self.budget.step_ended(measured)

    def pass_fits(self) -> bool:
        if self.budget is None or not self.samples:
            return True
        fits = self.budget.allows_pass()
        if self.peers is not None:
            fits = self.peers.agree_max(1.0 if fits else 0.0) > 0
        return fits

    def notes(self) -> list[str]:
        """What the budget decided (``auto``'s choice), once."""
        if self.budget is None or not self.budget.note or self._said:
            return []
        self._said = True
        return [self.budget.note]

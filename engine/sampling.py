"""Which steps are measured: every step, every N-th, or a random share of them, in bursts.

Why random: a share of steps drawn at random makes an epoch's measured steps a random sample of
its steps, so their interior-minimum share and barrier count estimate the epoch's without bias and
with an honest interval (``sgdwalk.shares``). Every N-th step would alias with anything periodic in
training (a data order that repeats, a short last batch at each epoch's end, a schedule).

Why bursts: the paper's Figure 1 is a run of consecutive steps, each slice joining the next; a
burst of ``burst`` consecutive steps keeps that picture (and the cosines of consecutive steps)
while a random share is measured. A burst starts at a step with a probability chosen so that the
share measured in the long run is ``rate``; the steps of one burst are alike, so the interval
treats each burst as one cluster (``shares.clustered``).

A step's fate is drawn once, when first asked, from the sampler's own seeded generator, so it never
touches the global RNG and is the same however often it is asked: the step meter asks about step
t + 1 while step t is taken (measuring t + 1 needs g_t and Δ_t), and again when it comes. A new
rate (a time budget learning the cost of a measured step) applies to steps not yet drawn. Plain
Python: no torch.
"""

from __future__ import annotations

import random


class Sampler:
    """``due(step)``: whether ``step`` (from 1) is measured; ``cluster(step)``: the first step of
    its burst.

    ``every`` N >= 1: every N-th step from the first (``measure_every``); 0: none. With ``rate``
    in (0, 1], a random share of steps instead, in bursts of ``burst`` consecutive steps.
    """

    def __init__(self, every: int = 1, rate: float | None = None, seed: int = 0,
                 burst: int = 1) -> None:  # fmt: skip
        self.every, self.rate, self.burst = every, rate, max(1, burst)
        self._rng = random.Random(seed * 7_919 + 104_729)
        self._drawn: dict[int, int | None] = {}  # step -> the first step of its burst, or None
        self._last = 0  # the last step drawn

    def due(self, step: int) -> bool:
        if self.rate is None:
            return self.every > 0 and (step - 1) % self.every == 0
        return self._draw(step) is not None

    def cluster(self, step: int) -> int:
        """The burst a measured step belongs to (its first step); the step itself otherwise."""
        if self.rate is None:
            return step
        start = self._draw(step)
        return step if start is None else start

    def _draw(self, step: int) -> int | None:
        while self._last < step:  # draw in order: a burst runs on from where it started
            t = self._last + 1
            prev = self._drawn.get(t - 1)
            if prev is not None and t - prev < self.burst:
                self._drawn[t] = prev
            else:
                self._drawn[t] = t if self._rng.random() < self._start_rate() else None
            self._last = t
        for old in [s for s in self._drawn if s < step - self.burst - 1]:
            del self._drawn[old]
        return self._drawn.get(step)

    def _start_rate(self) -> float:
        """The chance a burst starts at a free step, so that ``rate`` of all steps are measured:
        a burst of B steps after a gap of geometric length with mean (1 − q)/q measures
        B·q / (1 + (B − 1)·q) of the steps."""
        r, b = self.rate or 0.0, self.burst
        return r / (b - r * (b - 1)) if r < 1 else 1.0

    def set_rate(self, rate: float) -> None:
        """Measure a share ``rate`` of the steps not yet drawn (clipped to (0, 1])."""
        self.rate = min(1.0, max(rate, 1e-6))

    def set_every(self, every: int) -> None:
        """Back to every N-th step (a rate no longer applies)."""
        self.every, self.rate = every, None

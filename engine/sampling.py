"""Which steps are measured: every step, every N-th, or a random share of them.

Why random: a share of steps drawn at random makes an epoch's measured steps a simple random
sample of its steps, so their interior-minimum share and barrier count estimate the epoch's
without bias and with an honest interval (``sgdwalk.shares``). Every N-th step would alias with
anything periodic in training (a data order that repeats, a short last batch at each epoch's end,
a schedule with a period).

A step's fate is drawn once, when first asked, from the sampler's own seeded generator, so it never
touches the global RNG and is the same however often it is asked: the step meter asks about step
t + 1 while step t is taken (measuring t + 1 needs g_t and Δ_t for the cosines), and again when it
comes. A new rate (a time budget that learns the cost of a measured step) applies to steps not yet
drawn. Plain Python: no torch.
"""

from __future__ import annotations

import random


class Sampler:
    """``due(step)``: whether ``step`` (from 1) is measured.

    ``every`` N >= 1: every N-th step from the first (``measure_every``); 0: none. With ``rate``
    in (0, 1], each step is measured with that probability instead.
    """

    def __init__(self, every: int = 1, rate: float | None = None, seed: int = 0) -> None:
        self.every, self.rate = every, rate
        self._rng = random.Random(seed * 7_919 + 104_729)
        self._drawn: dict[int, bool] = {}

    def due(self, step: int) -> bool:
        if self.rate is None:
            return self.every > 0 and (step - 1) % self.every == 0
        if step not in self._drawn:
            if len(self._drawn) > 4:  # only the current and the next step are ever asked again
                for old in [s for s in self._drawn if s < step - 1]:
                    del self._drawn[old]
            self._drawn[step] = self._rng.random() < self.rate
        return self._drawn[step]

    def set_rate(self, rate: float) -> None:
        """Measure each step not yet drawn with probability ``rate`` (clipped to (0, 1])."""
        self.rate = min(1.0, max(rate, 1e-6))

    def set_every(self, every: int) -> None:
        """Back to every N-th step (a rate no longer applies)."""
        self.every, self.rate = every, None

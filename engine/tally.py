"""What an epoch's measured steps add up to, and what they say about the measurements.

``Tally`` counts barriers and interior minima among the measured steps, grouped by the burst each
belongs to (``sgdwalk.sampling``), so an epoch whose steps were sampled reports its shares with a
95% interval for the whole epoch (``sgdwalk.shares``); when every step was measured the interval
is the value itself. ``Caveats`` says once a session what the steps show about the measuring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sgdwalk.records import NOTE_EVENT, EventLogged, StepMeasured
from sgdwalk.shares import Share, clustered


@dataclass
class Tally:
    """An epoch's steps: how many, and per burst of measured steps [measured, interior minima,
    barriers]; the probe loss at the last measured step's end."""

    steps: int = 0
    bursts: dict[int, list[int]] = field(default_factory=dict)
    probe_loss: float = math.nan

    def add(self, rec: StepMeasured, burst: int) -> None:
        self.steps += 1
        if rec.measured:
            counts = self.bursts.setdefault(burst, [0, 0, 0])
            counts[0] += 1
            counts[1] += bool(rec.interior_min)
            counts[2] += bool(rec.barrier)
            self.probe_loss = rec.slice[-1] if rec.slice else math.nan

    def _total(self, i: int) -> int:
        return sum(c[i] for c in self.bursts.values())

    @property
    def measured(self) -> int:
        return self._total(0)

    @property
    def interior(self) -> int:
        return self._total(1)

    @property
    def barriers(self) -> int:
        return self._total(2)

    @property
    def interior_fraction(self) -> float:
        return self.interior / self.measured if self.measured else 0.0

    def share(self, i: int) -> Share:
        """The epoch's share of steps with property ``i`` (1 interior minimum, 2 barrier)."""
        cs = list(self.bursts.values())
        return clustered([c[i] for c in cs], [c[0] for c in cs], max(self.steps, self.measured))

    def intervals(self) -> dict[str, float | int | None]:
        """The EpochEnded fields of the shares' 95% intervals (barriers: the epoch's count)."""
        if not self.measured:
            return {"measured_steps": 0}
        inside, bars = self.share(1), self.share(2)
        n = max(self.steps, self.measured)
        return {"measured_steps": self.measured, "interior_min_low": inside.low,
                "interior_min_high": inside.high, "barriers_low": n * bars.low,
                "barriers_high": n * bars.high}  # fmt: skip


class Caveats:
    """What the measured steps say about the measurements themselves, each said once a session:
    a warning when a slice is not finite while the update is (NaN or inf in the probe's inputs,
    or a loss that returns NaN: the training is fine, its measurement is not), and a note when a
    step began with no gradient at all (its ``grad_norm`` is NaN: unknown, not zero)."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def of(self, rec: StepMeasured, gradless: int, elapsed: float) -> list[EventLogged]:
        out = []
        where = (rec.step, rec.epoch)
        if "probe" not in self.said and rec.slice and not all(map(math.isfinite, rec.slice)):
            update = (rec.step_norm, rec.dist_from_init)
            if all(v is not None and math.isfinite(v) for v in update):
                self.said.add("probe")
                text = PROBE_NOT_FINITE.format(step=rec.step)
                out.append(EventLogged(*where, "warning", "warning", text, elapsed))
        if gradless and "gradless" not in self.said:
            self.said.add("gradless")
            text = GRADLESS.format(step=rec.step)
            out.append(EventLogged(*where, "info", NOTE_EVENT, text, elapsed))
        return out


PROBE_NOT_FINITE = ("the probe's loss is not finite at step {step} while the update is: look for "
                    "NaN or inf in the probe's inputs, or a loss_fn that returns NaN (the slices "
                    "have gaps)")  # fmt: skip
GRADLESS = ("no gradient when step {step} began (every .grad was None: an optimiser that "
            "computes it inside step(closure), such as LBFGS?): grad_norm is NaN; call "
            "walker.before_step() after backward, with attach(optimizer, before=False)")  # fmt: skip

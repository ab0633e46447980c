"""Sharpness against the stability threshold (Cohen et al. 2021, "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability").

Gradient descent with step η on a quadratic of curvature λ is stable while λ < 2/η; heavy-ball
momentum β moves the bound to (2 + 2β)/η. Training often sharpens until λ1 reaches that line and
then hovers there. Weight decay wd (L2, added to the gradient as wd·θ) adds wd·I to the Hessian
of the objective that is being descended, so the curvature compared with the line is λ1(H) + wd,
where λ1(H) is what the curvature pass measures (the loss alone).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from sgdwalk.records import EDGE_EVENT, CurvatureMeasured, EventLogged


def threshold(lr: float, momentum: float = 0.0) -> float:
    """(2 + 2β)/η: the largest curvature a step of this size is stable on."""
    if not lr > 0:
        return math.inf
    with contextlib.suppress(OverflowError, ZeroDivisionError):
        return (2.0 + 2.0 * momentum) / lr
    return math.inf


def edge_ratio(
    lambda1: float, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> float:
    """(λ1 + wd) / ((2 + 2β)/η): 1 at the edge of stability, above it past the edge (NaN when
    the line is not a positive number: a session's odd lr or momentum)."""
    line = threshold(lr, momentum)
    if not (line > 0) or math.isinf(line) and math.isinf(lambda1):
        return math.nan
    return (lambda1 + weight_decay) / line


class EdgeWatch:
    """Says once when a curvature pass first finds λ1 (+ wd) at or past the threshold."""

    def __init__(self) -> None:
        self.reached = False

    def check(self, rec: CurvatureMeasured, hyper: Hyper, time: float) -> EventLogged | None:
        """``hyper``: the optimiser's lr, momentum and weight decay when the pass ran."""
        if self.reached or not rec.eigenvalues or not math.isfinite(rec.eigenvalues[0]):
            return None
        ratio = edge_ratio(rec.eigenvalues[0], hyper.lr, hyper.momentum, hyper.weight_decay)
        if not ratio >= 1.0:
            return None
        self.reached = True
        line = threshold(hyper.lr, hyper.momentum)
        return EventLogged(rec.step, rec.epoch, "info", EDGE_EVENT,
                           f"λ1 {rec.eigenvalues[0]:.4g} reached the stability threshold "
                           f"(2+2β)/η = {line:.4g} (λ1·η/(2+2β) = {ratio:.3g}): the edge of "
                           "stability", time)  # fmt: skip


@dataclass(frozen=True)
class Hyper:
    """What the threshold depends on: the step size, heavy-ball momentum, L2 weight decay."""

    lr: float = math.nan
    momentum: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def of(cls, optimizer: object) -> Hyper:
        """The first parameter group's, read as numbers (absent or not a number: lr NaN, the
        others 0; Adam has no momentum)."""
        groups = getattr(optimizer, "param_groups", None)
        if not groups:
            return cls()
        group = groups[0]
        lr = _number(group.get("lr"), math.nan)
        return cls(lr, _number(group.get("momentum"), 0.0), _number(group.get("weight_decay"), 0.0))


def _number(value: object, otherwise: float) -> float:
    if isinstance(value, bool) or value is None:
        return otherwise
    with contextlib.suppress(TypeError, ValueError, RuntimeError):  # a 0-d tensor lr too
        return float(value)  # type: ignore[arg-type]
    return otherwise

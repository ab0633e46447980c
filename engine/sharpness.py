"""Sharpness against the stability threshold (Cohen et al. 2021, "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability"): the plain-SGD formulas, which figures and ``ls`` use
for sessions recorded before curvature records carried the optimizer's own edge ratio
(``sgdwalk.geometry``), and the watch that says when a run first reaches its edge.

Gradient descent with step η on a quadratic of curvature λ is stable while λ < 2/η; heavy-ball
momentum β moves the bound to (2 + 2β)/η. Training often sharpens until λ1 reaches that line and
then hovers there. Weight decay wd (L2, added to the gradient as wd·θ) adds wd·I to the Hessian
of the objective that is being descended, so the curvature compared with the line is λ1(H) + wd,
where λ1(H) is what the curvature pass measures (the loss alone).
"""

from __future__ import annotations

import contextlib
import math

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
    """Says once when a curvature pass first finds the optimizer at or past its edge of
    stability (the pass's ``edge_ratio``, ``sgdwalk.geometry``)."""

    def __init__(self) -> None:
        self.reached = False

    def check(self, rec: CurvatureMeasured, time: float) -> EventLogged | None:
        ratio, sharp, at = rec.edge_ratio, rec.sharpness, rec.threshold
        if self.reached or ratio is None or sharp is None or at is None or not ratio >= 1.0:
            return None
        self.reached = True
        what = rec.sharpness_name or "sharpness"
        return EventLogged(rec.step, rec.epoch, "info", EDGE_EVENT,
                           f"{what} {sharp:.4g} reached the stability threshold {rec.edge_line} "
                           f"= {at:.4g} (edge ratio {ratio:.3g}): the edge of stability",
                           time)  # fmt: skip

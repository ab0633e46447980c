"""Sharpness at every measured step, between curvature passes: the top eigenpair followed by one
Hessian-vector product a step.

Why: edge-of-stability papers plot sharpness at every step, and a curvature pass costs tens of
products. The top eigenvector moves little from one step to the next, so one step of power
iteration from the last vector, v <- Av/‖Av‖, with the Rayleigh quotient vᵀAv as the value,
follows λmax(A) at one product a step. A is the operator of the optimizer's own edge
(``sgdwalk.geometry``: s ⊙ (H + L2) ⊙ s with s = (D/c)^½), so the value is the edge ratio, 1 at
the edge, for SGD and Adam alike. Each curvature pass restarts it from the pass's own top vector
of A. A Rayleigh quotient never exceeds λmax, and is close once v is near the top eigenvector:
exact to the pass's tolerance right after a pass, then as good as the gap between the top two
eigenvalues lets one product a step keep up (tested against full passes).
"""

from __future__ import annotations

import math

import torch

from sgdwalk.curvature.edge import scaled
from sgdwalk.curvature.hvp import hessian_operator
from sgdwalk.geometry import Geometry
from sgdwalk.probe import Evaluator
from sgdwalk.probe_set import ProbeSet


class Tracker:
    """``step(theta, geometry)``: the edge ratio at ``theta``, one product past the last."""

    def __init__(self, evaluator: Evaluator, probe: ProbeSet, start: torch.Tensor) -> None:
        self.ev, self.probe = evaluator, probe
        v = start.reshape(-1).to(evaluator.flat)
        self.v = v / v.norm()

    def step(self, theta: torch.Tensor, geometry: Geometry) -> float | None:
        """The Rayleigh quotient of the edge operator at ``theta`` (None: not finite, as before
        an adaptive optimizer's first step), and the vector moved one power step on."""
        if not bool(torch.isfinite(geometry.scale).all()):
            return None
        self.ev.load(theta)
        probe = self.probe
        with hessian_operator(self.ev, probe.hessian_chunks, cache=False,
                              shard=probe.hessian_shard) as op:  # fmt: skip
            w = scaled(op, geometry)(self.v)
        value = float(self.v @ w.to(self.v))
        norm = float(w.norm())
        if not (math.isfinite(value) and math.isfinite(norm)) or norm == 0:
            return None
        self.v = (w / norm).to(self.v)
        return value

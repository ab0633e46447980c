"""The optimizer's edge ratio from a curvature pass: λmax(D^½ (H + L2) D^½) / c.

The geometry (``sgdwalk.geometry``) gives (D/c)^½ as a flat vector s and the L2 weight decay per
parameter; the ratio is the top eigenvalue of the operator v ↦ s ⊙ H(s ⊙ v) + s² ⊙ l2 ⊙ v, one
Hessian-vector product per Lanczos step, on the same (cached) Hessian operator as the pass's top-k.
For plain SGD (one lr, no preconditioner, one weight decay) the operator is a multiple of H + wd·I,
so the ratio is s²(λ1 + wd) from the pass's own λ1: no extra product. Warm-started from the
previous pass's top vector, a pass costs a few products more (``EDGE_TOL`` is looser than the
top-k's: one number for a plot, not a spectrum).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import torch

from sgdwalk.curvature.lanczos import Operator, lanczos_steps
from sgdwalk.geometry import Geometry

EDGE_TOL = 1e-2  # relative residual of the edge ratio's eigenpair


@dataclass(frozen=True)
class Edge:
    """A pass's edge: the ratio (1 at the edge of stability), the threshold c₀/η₀ it is read
    against, and sharpness = ratio · threshold; ``vector`` warm-starts the next pass."""

    edge_ratio: float
    threshold: float
    vector: torch.Tensor | None
    products: int

    @property
    def sharpness(self) -> float:
        return self.edge_ratio * self.threshold


def scaled(op: Operator, g: Geometry) -> Operator:
    """v ↦ s ⊙ H(s ⊙ v) + s² ⊙ l2 ⊙ v with s = (D/c)^½."""
    s = g.scale
    diag = None if g.l2 is None else s * s * g.l2

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = s * op(s * v.to(s))
        return out if diag is None else out + diag * v

    return apply


def edge_of(
    op: Operator, g: Geometry, lambda1: float, start: torch.Tensor | None = None, seed: int = 0
) -> Generator[int, None, Edge]:
    """The edge of ``g`` on the Hessian operator ``op`` (``lambda1``: its top eigenvalue, from
    the pass); yields the products it makes (none for plain SGD)."""
    if not bool(torch.isfinite(g.scale).all()):
        return Edge(math.nan, g.threshold, None, 0)  # before an adaptive optimizer's first step
    if g.plain and math.isfinite(lambda1):
        s2 = float(g.scale.max()) ** 2
        wd = 0.0 if g.l2 is None else float(g.l2.flatten()[0])
        return Edge(s2 * (lambda1 + wd), g.threshold, None, 0)
    result = yield from lanczos_steps(scaled(op, g), g.scale.numel(), 1, tol=EDGE_TOL, seed=seed,
                                      start=start, dtype=g.scale.dtype,
                                      device=g.scale.device)  # fmt: skip
    top = float(result.eigenvalues[0])
    vector = result.eigenvectors if math.isfinite(top) else None
    return Edge(top, g.threshold, vector, result.matvecs)

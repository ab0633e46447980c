"""Barrier and valley-floor logic on one interpolation slice (README "What is measured").

Pure Python on a list of K+1 losses L_0..L_K, so it can be property-tested on arbitrary curves and
reused by any consumer (engine, export, a user's script) without torch.

Tolerance: the slice is evaluated in the model's float precision, so two losses that differ by
rounding noise must not count as a barrier. A barrier needs the interior maximum to exceed
max(L_0, L_K) by more than ``BARRIER_RTOL * max(|L_0|, |L_K|, 1e-12)``; an interior minimum needs the
interior minimum to fall below min(L_0, L_K) by more than the same amount. The raw barrier height is
stored unthresholded either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BARRIER_RTOL = 1e-5  # float32 losses carry ~1e-7 relative rounding noise per evaluation


def interpolation_alphas(k: int) -> list[float]:
    """α_j = j/K for j = 0..K: the slice's points, θ_t + α_j Δ_t (K >= 1)."""
    if k < 1:
        raise ValueError(f"a slice needs K >= 1 intervals, got {k}")
    return [j / k for j in range(k + 1)]


@dataclass(frozen=True, slots=True)
class SliceStats:
    barrier: bool
    barrier_height: float  # max_interior L_j − max(L_0, L_K), raw (may be negative)
    floor_loss: float  # L*_t = min_j L_j
    floor_alpha: float  # α at the first argmin
    interior_min: bool
    height_above_floor: float  # L_0 − L*_t


def analyze_slice(
    losses: list[float], alphas: list[float], rtol: float = BARRIER_RTOL
) -> SliceStats:
    """Barrier, barrier height, valley floor and interior minimum of L_0..L_K (K >= 2)."""
    if len(losses) < 3 or len(losses) != len(alphas):
        raise ValueError("a slice needs K+1 >= 3 losses and as many alphas")
    first, last = losses[0], losses[-1]
    interior = losses[1:-1]
    if any(math.isnan(v) for v in losses):
        nan = float("nan")
        return SliceStats(False, nan, nan, nan, False, nan)
    scale = max(abs(first), abs(last), 1e-12)
    tol = rtol * scale if math.isfinite(scale) else 0.0
    top = max(first, last)
    height = max(interior) - top
    j_floor = min(range(len(losses)), key=losses.__getitem__)  # first argmin
    floor = losses[j_floor]
    return SliceStats(
        barrier=height > tol,
        barrier_height=height,
        floor_loss=floor,
        floor_alpha=alphas[j_floor],
        interior_min=min(interior) < min(first, last) - tol,
        height_above_floor=first - floor,
    )

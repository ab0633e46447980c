"""What is measured, and how often: the settings both clients of the Instrument take.

The built-in trainer builds them from its config (``sgdwalk.train.settings_of``), the Walker from
its arguments; both are parsed already (``sgdwalk.values``), and ``as_dict`` is what a session
stores of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgdwalk.values import ALIGN_DEFAULT, AlignSizes, Schedule, schedule_text


@dataclass(frozen=True)
class Settings:
    """What is measured, and how often: the knobs both clients take (as flags or as the Walker's
    arguments), parsed."""

    points: int = 10  # K: the slice's points α = 0, 1/K, .., 1
    measure_every: int = 1  # measure every N-th step (0: none)
    slice_mode: str = "auto"  # "loop", "vmap" or "auto" (sgdwalk.slicing)
    hessian_every: Schedule | None = None  # curvature passes (and one at the start)
    top_k: int = 10
    align_sizes: AlignSizes = ALIGN_DEFAULT
    align_samples: int = 10
    seed: int = 0
    decompose: bool = False  # split each step by the latest top-k eigenvectors
    batch_sharpness: bool = False  # g_Bᵀ H_B g_B / ‖g_B‖² on each measured step's batch
    layer_curvature: bool = False  # each layer's top eigenvalue in curvature passes
    density: bool = False  # the spectral density (stochastic Lanczos quadrature) in passes
    track_sharpness: bool = False  # the edge ratio at every measured step, between passes
    budget: float | None = None  # measuring's most share of the training time (None: every step)
    budget_auto: bool = False  # every step when the whole run is short, else the default share
    burst: int = 1  # sampled steps come in runs of this many consecutive steps

    def as_dict(self) -> dict[str, Any]:
        """The settings as a session stores them (the schedule as its canonical text)."""
        return {"points": self.points, "measure_every": self.measure_every,
                "slice_mode": self.slice_mode, "hessian_every": schedule_text(self.hessian_every),
                "top_k": self.top_k, "align_batch_sizes": str(self.align_sizes),
                "align_samples": self.align_samples, "seed": self.seed,
                "decompose": self.decompose, "batch_sharpness": self.batch_sharpness,
                "layer_curvature": self.layer_curvature, "density": self.density,
                "track_sharpness": self.track_sharpness,
                "budget": "auto" if self.budget_auto else self.budget, "burst": self.burst}  # fmt: skip

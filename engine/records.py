"""The records the engine speaks in.

Every consumer (session store, dashboard, headless progress, export, user scripts) sees these
same frozen dataclasses, so their names and fields are a public contract (SPEC "Records").
Steps count updates from 1; epochs count from 1. Values are plain Python floats/ints/lists so a
record is cheap to build, compare and serialise, and holds no tensors (no device memory, no syncs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepMeasured:
    """One optimiser update θ_t → θ_{t+1}, with its landscape measurements.

    On a step that was not measured (``--measure-every N > 1``) only the training fields
    (step, epoch, lr, batch_size, batch_loss, elapsed) are set; the others are empty lists or None.
    """

    step: int
    epoch: int
    lr: float
    batch_size: int
    batch_loss: float
    elapsed: float
    grad_norm: float | None = None
    alphas: list[float] | None = None
    slice: list[float] | None = None
    barrier: bool | None = None
    barrier_height: float | None = None
    floor_loss: float | None = None
    floor_alpha: float | None = None
    interior_min: bool | None = None
    height_above_floor: float | None = None
    step_norm: float | None = None
    dist_from_init: float | None = None
    grad_cos: float | None = None
    update_cos: float | None = None

    @property
    def measured(self) -> bool:
        return self.slice is not None


@dataclass(frozen=True, slots=True)
class EpochEnded:
    """Summary at the end of an epoch. ``steps`` is the total number of updates so far."""

    epoch: int
    steps: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    barriers: int
    interior_min_fraction: float


@dataclass(frozen=True, slots=True)
class Alignment:
    """Gradient–Hessian alignment for one batch size, mean and std over ``samples`` draws."""

    batch_size: int
    samples: int
    eig_cos_mean: list[float]
    eig_cos_std: list[float]
    subspace_mean: float
    subspace_std: float
    rayleigh_mean: float
    rayleigh_std: float
    full_cos_mean: float
    full_cos_std: float


@dataclass(frozen=True, slots=True)
class CurvatureMeasured:
    """Top-k Hessian eigenvalues of L_P at θ after ``step`` updates, and alignment per batch size."""

    step: int
    epoch: int
    eigenvalues: list[float]
    residuals: list[float]
    hvps: int
    alignment: list[Alignment]


@dataclass(frozen=True, slots=True)
class EventLogged:
    """Something the user should read: divergence, warnings, the run's end."""

    step: int
    epoch: int
    level: str  # "info" | "warning" | "error"
    kind: str  # e.g. "started", "diverged", "interrupted", "finished", "failed"
    message: str
    time: float  # seconds since the run started


@dataclass(frozen=True, slots=True)
class PhaseProgressed:
    """A long computation between steps ("curvature 12/30 products"). Transient: not stored."""

    step: int
    epoch: int
    phase: str
    done: int
    total: int


Record = StepMeasured | EpochEnded | CurvatureMeasured | EventLogged | PhaseProgressed

# Session statuses (SPEC "Sessions").
RUNNING = "running"
FINISHED = "finished"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"
FAILED = "failed"
STATUSES = (RUNNING, FINISHED, INTERRUPTED, DIVERGED, FAILED)

# Kinds of the events that acknowledge a pause (written once training really holds) and its end.
PAUSED_EVENT = "paused"
RESUMED_EVENT = "resumed"

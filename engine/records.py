"""The records the engine speaks in, and the one list of their fields.

Every consumer (session store, dashboard, headless progress, export, user scripts) sees these
same frozen dataclasses, so their names and fields are a public contract. They are also the one
schema: the session's SQL columns, its row encoders and decoders (``sgdwalk.session.schema``) and
the csv/json columns of ``sgdwalk export`` are derived from ``dataclasses.fields`` of these
classes, so a new measurement is a new field here and nowhere else. Field metadata says what the
derivation cannot guess: ``stored: False`` (derived on reading from another field: the α grid
from the slice length), ``NAN_WHEN_MEASURED`` (a measured step's float that SQLite stored as NULL was a NaN), and
``columns`` (how a list spreads over csv/json columns).

Steps count updates from 1; epochs count from 1. Values are plain Python floats/ints/lists so a
record is cheap to build, compare and serialise, and holds no tensors (no device memory, no syncs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from sgdwalk.landscape import interpolation_alphas

# Field metadata (see the module notes).
NAN_WHEN_MEASURED = {"nan_when_measured": True}


def _alpha_grid(losses: list[float]) -> list[float]:
    return interpolation_alphas(len(losses) - 1)


ALPHAS_FROM_SLICE = {"stored": False, "from": ("slice", _alpha_grid)}


def columns(pattern: str, paired: str | None = None) -> dict[str, str]:
    """Metadata: a list field's csv/json columns, ``pattern`` formatted with its index, 0-based
    as ``j`` (``L_{j}``: L_0..L_K) or 1-based as ``i`` (``eig_cos_mean_{i}``: one per v_i);
    ``paired``: the list field it goes with element by element (a stored pair of other lengths
    is a damaged record)."""
    return {"columns": pattern} | ({"paired": paired} if paired else {})


@dataclass(frozen=True, slots=True)
class StepMeasured:
    """One optimiser update θ_t → θ_{t+1}, with its landscape measurements.

    On a step that was not measured (``--measure-every N > 1``) only the training fields
    (step, epoch, lr, batch_size, batch_loss, elapsed) are set; the others are None.
    """

    step: int
    epoch: int
    lr: float
    batch_size: int
    batch_loss: float
    elapsed: float  # seconds since the run started
    grad_norm: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    alphas: list[float] | None = field(default=None, metadata=ALPHAS_FROM_SLICE)  # α_j = j/K
    slice: list[float] | None = field(default=None, metadata=columns("L_{j}"))  # L_0..L_K
    barrier: bool | None = None
    barrier_height: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    floor_loss: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    floor_alpha: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    interior_min: bool | None = None
    height_above_floor: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    step_norm: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    dist_from_init: float | None = field(default=None, metadata=NAN_WHEN_MEASURED)
    grad_cos: float | None = None  # None on the first measured step, or after a gap
    update_cos: float | None = None
    # --decompose: Δ_t split by the top-k eigenvectors V_k of the latest curvature pass
    dominant_fraction: float | None = None  # ‖V_kV_kᵀΔ_t‖² / ‖Δ_t‖²
    dominant_loss: float | None = None  # L_P(θ_t + V_kV_kᵀΔ_t)
    bulk_loss: float | None = None  # L_P(θ_t + (I − V_kV_kᵀ)Δ_t)
    basis_step: int | None = None  # the step of the curvature pass whose V_k was used
    # --batch-sharpness: g_Bᵀ H_B g_B / ‖g_B‖², the step's own batch gradient and batch Hessian
    batch_sharpness: float | None = None
    # --track-sharpness: the optimizer's edge ratio at θ_{t+1}, followed from the last curvature
    # pass by one Hessian-vector product a measured step (sgdwalk.edge_tracker)
    edge_ratio: float | None = None

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
    barriers: int  # among the measured steps
    interior_min_fraction: float  # among the measured steps
    # when only some steps were measured (a time budget: sgdwalk.budget), the 95% intervals of
    # the epoch's interior-minimum share and barrier count (sgdwalk.shares); when all were, each
    # interval is the value itself. None in sessions recorded before.
    measured_steps: int | None = None
    interior_min_low: float | None = None
    interior_min_high: float | None = None
    barriers_low: float | None = None
    barriers_high: float | None = None


@dataclass(frozen=True, slots=True)
class Alignment:
    """Gradient–Hessian alignment for one batch size, mean and std over ``samples`` draws."""

    batch_size: int
    samples: int
    eig_cos_mean: list[float] = field(metadata=columns("eig_cos_mean_{i}"))
    eig_cos_std: list[float] = field(metadata=columns("eig_cos_std_{i}"))
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
    residuals: list[float]  # relative: ‖H v_i − λ_i v_i‖ / |λ_i|
    hvps: int  # Hessian-vector products the pass used
    alignment: list[Alignment]
    elapsed: float | None = None  # seconds since the run started, when the pass ended
    seconds: float | None = None  # how long the pass took (training waits meanwhile)
    # the optimizer's edge of stability (sgdwalk.geometry): λmax(D^½ (H + L2) D^½) / c, 1 at the
    # edge; threshold = c₀/η₀ of the first group; sharpness = edge_ratio · threshold (plain SGD:
    # λ1 + wd against (2 + 2β)/η). None: an optimizer whose edge is not known, or none attached
    edge_ratio: float | None = None
    threshold: float | None = None
    sharpness: float | None = None
    edge_line: str | None = None  # the threshold in symbols: "(2+2β)/η", "(2+2β1)/((1−β1)η)"
    sharpness_name: str | None = None  # what sharpness is: "λ1", "λ1 + wd", "preconditioned"
    # --layer-curvature: the top eigenvalue of each module's diagonal block of H (names: the
    # session's info "layers")
    layer_eigenvalues: list[float] | None = field(default=None, metadata=columns("layer_{i}"))
    # --density: the spectral density's quadrature nodes and weights (stochastic Lanczos)
    density_nodes: list[float] | None = field(default=None, metadata=columns("density_node_{i}"))
    density_weights: list[float] | None = field(default=None,
                                                metadata=columns("density_weight_{i}", "density_nodes"))  # fmt: skip


Level = Literal["info", "warning", "error"]
# Run outcomes are events of their own kind; the last one names the session's final status.
EventKind = Literal[
    "finished",
    "interrupted",
    "diverged",
    "failed",
    "paused",
    "resumed",
    "skipped",
    "warning",
    "edge",
    "note",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


@dataclass(frozen=True, slots=True)
class EventLogged:
    """Something the user should read: a pause, a warning, the run's end."""

    step: int
    epoch: int
    level: Level
    kind: EventKind
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

# Session statuses. Every one but "running" is also the kind of the event that ends a run.
RUNNING: Final = "running"
FINISHED: Final = "finished"
INTERRUPTED: Final = "interrupted"
DIVERGED: Final = "diverged"
FAILED: Final = "failed"
STATUSES = (RUNNING, FINISHED, INTERRUPTED, DIVERGED, FAILED)
ENDINGS = (FINISHED, INTERRUPTED, DIVERGED, FAILED)

PAUSED_EVENT: Final = "paused"  # written once training really holds, naming the last step taken
RESUMED_EVENT: Final = "resumed"
EDGE_EVENT: Final = "edge"  # λ1 first reached the stability threshold (2 + 2β)/η
NOTE_EVENT: Final = "note"  # a choice the run made for itself (the slice mode ``auto`` timed)
SKIPPED_EVENT: Final = "skipped"  # an update the loop did not take (an AMP scaler skipped it)

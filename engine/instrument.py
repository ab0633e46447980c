"""The measuring core: one ``Instrument`` measures a training run, whoever drives the training.

Why one core and two thin clients: the built-in trainer (``sgdwalk.train.Run``: data, gradient
descent, DDP) and a user's own loop (``sgdwalk.Walker``: optimizer hooks) offer a measurement the
same moments: before an update, after it, at an epoch's end. Everything measured at those moments
lives here, once: the private copy of the model (``Evaluator``), the probe set (``ProbeSet``), how
slices are evaluated (``Slicer``), the per-step measurements (``StepMeter``), the curvature
schedule and passes (``CurvatureMeter``), the edge-of-stability watch, the epoch's tally of
barriers and interior minima, and the caveats the measured steps raise about the measurements
themselves (a probe whose loss is not finite, a step begun with no gradient). A client calls the
moments and routes the records they yield (the trainer yields them on to its consumer; the Walker
writes them to its session), so adding a measurement touches this core and the records, not the
clients.

The Instrument leaves the model as it found it: it reads parameters and gradients, evaluates on
its own copy, and reads the optimiser's hyper-parameters only to label the records.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sgdwalk.curvature.spectrum import blocks
from sgdwalk.geometry import lr_of
from sgdwalk.meter import StepMeter
from sgdwalk.models import count_params
from sgdwalk.passes import Passes
from sgdwalk.probe import Chunks, Evaluator
from sgdwalk.probe_set import ProbeSet
from sgdwalk.records import (
    NOTE_EVENT,
    EpochEnded,
    EventLogged,
    Record,
    StepMeasured,
)
from sgdwalk.slicing import Slicer
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

    def as_dict(self) -> dict[str, Any]:
        """The settings as a session stores them (the schedule as its canonical text)."""
        return {"points": self.points, "measure_every": self.measure_every,
                "slice_mode": self.slice_mode, "hessian_every": schedule_text(self.hessian_every),
                "top_k": self.top_k, "align_batch_sizes": str(self.align_sizes),
                "align_samples": self.align_samples, "seed": self.seed,
                "decompose": self.decompose, "batch_sharpness": self.batch_sharpness,
                "layer_curvature": self.layer_curvature, "density": self.density}  # fmt: skip


@dataclass
class Tally:
    """Barriers and interior minima among an epoch's measured steps, and the probe loss at the
    last one's end."""

    barriers: int = 0
    interior: int = 0
    measured: int = 0
    probe_loss: float = math.nan

    def add(self, rec: StepMeasured) -> None:
        if rec.measured:
            self.barriers += bool(rec.barrier)
            self.interior += bool(rec.interior_min)
            self.measured += 1
            self.probe_loss = rec.slice[-1] if rec.slice else math.nan

    @property
    def interior_fraction(self) -> float:
        return self.interior / self.measured if self.measured else 0.0


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


class Instrument:
    """Measures the updates of ``model`` on ``probe`` with ``evaluator`` (its private copy).

    ``optimizer``: whose first parameter group labels the records (lr) and places the stability
    threshold; it may come later (``use``). The moments, in a client's order:
    ``before_update`` / ``after_update`` around each ``optimizer.step()``, ``curvature_pass``
    when ``curvature_due``, and ``epoch_ended`` at an epoch's end.
    """

    def __init__(
        self, model: nn.Module, evaluator: Evaluator, probe: ProbeSet, settings: Settings,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:  # fmt: skip
        self.evaluator, self.probe, self.settings = evaluator, probe, settings
        self.optimizer = optimizer
        self.slicer = Slicer(evaluator, settings.slice_mode)
        self.passes = Passes(evaluator, probe, settings, self.elapsed)  # curvature
        self.tally = Tally()
        self.caveats = Caveats()  # said once a session
        self._started = time.perf_counter()
        self.measuring = True  # False: a bare walk (training fields only)
        self.meter = self._meter(model, settings.measure_every)

    def _meter(self, model: nn.Module, every: int) -> StepMeter:
        s = self.settings
        return StepMeter(model, self.slicer, self.probe.slice_chunks, s.points, every,
                         shard=self.probe.shard, basis=self.passes.basis if s.decompose else None,
                         batch_sharpness=s.batch_sharpness, clock=self.elapsed)  # fmt: skip

    def restart(self, model: nn.Module, measure: bool = True) -> None:
        """Begin a new walk from ``model``'s θ: a fresh trail and clock (``measure=False``: the
        training fields only, no measurements, no curvature)."""
        self._started = time.perf_counter()
        self.measuring = measure
        self.meter = self._meter(model, self.settings.measure_every if measure else 0)
        self.tally = Tally()

    def elapsed(self) -> float:
        """Seconds since the walk began (the records' clock)."""
        return time.perf_counter() - self._started

    def use(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def lr(self) -> float:
        """The learning rate of the optimizer's first group now (NaN: none attached)."""
        return lr_of(self.optimizer)

    def measure_every(self, n: int) -> None:
        """Measure every ``n``-th step from now on (a time budget's choice)."""
        self.meter.every = n

    @contextlib.contextmanager
    def stoppable(self, should_stop: Callable[[], bool]) -> Iterator[None]:
        """Measurements inside the block stop (``Stopped``) between probe chunks and Hessian
        products once ``should_stop()`` says so."""
        self.evaluator.should_stop = should_stop
        try:
            yield
        finally:
            self.evaluator.should_stop = lambda: False

    # -- the moments of an update

    def before_update(
        self, model: nn.Module, step: int, batch: Callable[[], Chunks] | None = None
    ) -> None:
        """After backward, before ``optimizer.step()``. ``batch``: the step's own examples,
        un-augmented, asked for only when a measurement needs them."""
        wanted = batch is not None and self.meter.wants_batch(step)
        self.meter.before_update(model, step, batch() if wanted else None)  # type: ignore[misc]

    def after_update(
        self, model: nn.Module, step: int, epoch: int, batch_size: int,
        batch_loss: torch.Tensor | float,
    ) -> list[Record]:  # fmt: skip
        """After ``optimizer.step()``: the step's record, and what the slices decided for
        themselves (notes)."""
        lr = self.lr()
        rec = self.meter.after_update(model, step, epoch, lr, batch_size, batch_loss)
        self.tally.add(rec)
        return [rec, *self.caveats.of(rec, self.meter.gradless, self.elapsed()),
                *self.notes(step, epoch)]  # fmt: skip

    def discard(self) -> None:
        """The update begun with ``before_update`` was not taken."""
        self.meter.discard()

    def notes(self, step: int, epoch: int) -> list[EventLogged]:
        return [EventLogged(step, epoch, "info", NOTE_EVENT, note, self.elapsed())
                for note in self.slicer.take_notes()]  # fmt: skip

    # -- curvature

    def curvature_due(self, unit: str, count: int) -> bool:
        """Whether the schedule asks for a pass after ``count`` steps or epochs (``unit``; the
        start is step 0)."""
        return self.passes.due(unit, count, self.measuring)

    def curvature_pass(self, model: nn.Module, step: int, epoch: int) -> Iterator[Record]:
        """A pass at ``model``'s θ (``sgdwalk.passes``)."""
        return self.passes.run(model, step, epoch, self.optimizer)

    # -- epochs

    def epoch_ended(
        self, epoch: int, step: int, summary: tuple[float, float, float, float] | None = None
    ) -> EpochEnded:
        """The epoch's record, and a fresh tally for the next. ``summary``: train loss and
        accuracy, validation loss and accuracy; without it the probe loss at the epoch's last
        measured step, and NaN for the rest."""
        tally, self.tally = self.tally, Tally()
        nan = math.nan
        tl, ta, vl, va = summary if summary is not None else (tally.probe_loss, nan, nan, nan)
        return EpochEnded(epoch=epoch, steps=step, train_loss=tl, train_acc=ta, val_loss=vl,
                          val_acc=va, barriers=tally.barriers,
                          interior_min_fraction=tally.interior_fraction)  # fmt: skip

    # -- what a session stores about it

    def info(self, model: nn.Module, device: torch.device, world: int) -> dict[str, object]:
        """The run's sizes, device and library versions (a session's ``info``)."""
        return {
            "device": str(device), "device_name": device_name(device),
            "params": count_params(model), "probe_size": self.probe.size,
            "probe_chunk": self.probe.chunk, "points": self.settings.points,
            "slice_mode": self.slicer.mode, "threads": torch.get_num_threads(),
            "world_size": world, "versions": versions(),
        } | ({"layers": [b.name for b in blocks(self.evaluator.shadow)]}
             if self.settings.layer_curvature else {})  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "sgdwalk": _version()}  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sgdwalk")
    except PackageNotFoundError:
        return "unknown"

"""The measuring core: one ``Instrument`` measures a training run, whoever drives the training.

Why one core and two thin clients: the built-in trainer (``sgdwalk.train.Run``: data, gradient
descent, DDP) and a user's own loop (``sgdwalk.Walker``: optimizer hooks) offer a measurement the
same moments: before an update, after it, at an epoch's end. Everything measured at those moments
lives here, once: the private copy of the model (``Evaluator``), the probe set (``ProbeSet``), how
slices are evaluated (``Slicer``), the per-step measurements (``StepMeter``), which steps are
measured and what that may cost (``Sampler``, ``Budget``), the curvature schedule and passes
(``Passes``), the epoch's tally of barriers and interior minima with their intervals, and the
caveats the measured steps raise about the measurements themselves. A client calls the moments
and routes the records they yield (the trainer yields them on to its consumer; the Walker writes
them to its session), so adding a measurement touches this core and the records, not the clients.

The Instrument leaves the model as it found it: it reads parameters and gradients, evaluates on
its own copy, and reads the optimiser's hyper-parameters only to label the records. It times its
own work, so a budget can hold it to a share of the training's time.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from torch import nn

from sgdwalk.budget import Budget, Pace
from sgdwalk.curvature.spectrum import blocks
from sgdwalk.geometry import lr_of
from sgdwalk.meter import StepMeter
from sgdwalk.models import count_params
from sgdwalk.passes import Passes
from sgdwalk.probe import Chunks, Evaluator
from sgdwalk.probe_set import ProbeSet
from sgdwalk.records import NOTE_EVENT, EpochEnded, EventLogged, Record
from sgdwalk.sampling import Sampler
from sgdwalk.settings import Settings
from sgdwalk.slicing import Slicer
from sgdwalk.tally import Caveats, Tally

POSTPONED = ("curvature passes wait until they fit the time budget ({budget:.0%} of the "
             "training time); --budget off (budget=None) runs them on schedule")  # fmt: skip


class Instrument:
    """Measures the updates of ``model`` on ``probe`` with ``evaluator`` (its private copy).

    ``optimizer``: whose first parameter group labels the records (lr) and places the stability
    threshold; it may come later (``use``). ``total_steps``: the run's, when known (the budget's
    ``auto``). The moments, in a client's order: ``before_update`` / ``after_update`` around each
    ``optimizer.step()``, ``curvature_pass`` when ``curvature_due``, ``epoch_ended`` at an epoch's
    end.
    """

    def __init__(
        self, model: nn.Module, evaluator: Evaluator, probe: ProbeSet, settings: Settings,
        optimizer: torch.optim.Optimizer | None = None, total_steps: int | None = None,
    ) -> None:  # fmt: skip
        self.evaluator, self.probe, self.settings = evaluator, probe, settings
        self.optimizer, self.total_steps = optimizer, total_steps
        self.slicer = Slicer(evaluator, settings.slice_mode)
        self.passes = Passes(evaluator, probe, settings, self.elapsed)  # curvature
        self.caveats = Caveats()  # said once a session
        self.restart(model)

    def restart(self, model: nn.Module, measure: bool = True) -> None:
        """Begin a new walk from ``model``'s θ: a fresh trail, clock, tally and budget
        (``measure=False``: the training fields only, no measurements, no curvature)."""
        s = self.settings
        self._started = time.perf_counter()
        self.measuring = measure
        self.sampler = Sampler(s.measure_every if measure else 0, seed=s.seed, burst=s.burst)
        budget = None  # (when measuring: a clock of its own cost, and the share it may take)
        if measure:  # (a fixed --measure-every N is the user's own schedule: no share)
            mine = s.measure_every != 1
            budget = Budget(None if mine else s.budget, s.budget_auto and not mine,
                            self.total_steps)  # fmt: skip
        self.pace = Pace(budget, self.sampler, self.probe.peers)
        self.owed = False  # a curvature pass due that waits for the budget
        self._waited = False  # whether that was said
        self._passed_at: int | None = None  # the step of the last pass
        self._pending: list[str] = []  # notes for the next step's records
        self.meter = StepMeter(model, self.slicer, self.probe.slice_chunks, s.points,
                               sampler=self.sampler, shard=self.probe.shard,
                               basis=self.passes.basis if s.decompose else None,
                               batch_sharpness=s.batch_sharpness, clock=self.elapsed)  # fmt: skip
        self.tally = Tally()

    def elapsed(self) -> float:
        """Seconds since the walk began (the records' clock)."""
        return time.perf_counter() - self._started

    def use(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def lr(self) -> float:
        """The learning rate of the optimizer's first group now (NaN: none attached)."""
        return lr_of(self.optimizer)

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
        self.pace.step_started()
        with self.pace.own():
            wanted = batch is not None and self.meter.wants_batch(step)
            self.meter.before_update(model, step, batch() if wanted else None)  # type: ignore[misc]

    def after_update(
        self, model: nn.Module, step: int, epoch: int, batch_size: int,
        batch_loss: torch.Tensor | float,
    ) -> list[Record]:  # fmt: skip
        """After ``optimizer.step()``: the step's record, and what the slices and the budget
        decided for themselves (notes)."""
        with self.pace.own():
            rec = self.meter.after_update(model, step, epoch, self.lr(), batch_size, batch_loss)
            if rec.measured and self.passes.tracker is not None:
                rec = replace(rec, edge_ratio=self.passes.track(model, self.optimizer))
        self.pace.step_ended(rec.measured)
        self.tally.add(rec, self.sampler.cluster(step))
        return [rec, *self.caveats.of(rec, self.meter.gradless, self.elapsed()),
                *self.notes(step, epoch)]  # fmt: skip

    def discard(self) -> None:
        """The update begun with ``before_update`` was not taken."""
        self.meter.discard()

    def notes(self, step: int, epoch: int) -> list[EventLogged]:
        pending, self._pending = self._pending, []
        return [EventLogged(step, epoch, "info", NOTE_EVENT, note, self.elapsed())
                for note in [*self.slicer.take_notes(), *self.pace.notes(), *pending]]  # fmt: skip

    # -- curvature

    def curvature_due(self, unit: str, count: int, step: int | None = None) -> bool:
        """Whether a pass should run after ``count`` steps or epochs (``unit``; the start is step
        0; ``step``: the step it would be at, for epochs): the schedule asks for one (or one is
        owed), and it fits the time budget. One that ran at this very step answers for both."""
        if self._passed_at == (count if step is None else step):
            return False
        self.owed = self.owed or self.passes.due(unit, count, self.measuring)
        if not self.owed:
            return False
        if not self.pace.pass_fits():
            budget = self.pace.budget
            if budget is not None and budget.fraction is not None and not self._waited:
                self._waited = True
                self._pending.append(POSTPONED.format(budget=budget.fraction))
            return False
        self.owed = False
        return True

    def curvature_pass(self, model: nn.Module, step: int, epoch: int) -> Iterator[Record]:
        """A pass at ``model``'s θ (``sgdwalk.passes``), timed against the budget."""
        self._passed_at = step
        with self.pace.own(in_pass=True):
            yield from self.passes.run(model, step, epoch, self.optimizer)

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
                          interior_min_fraction=tally.interior_fraction,
                          **tally.intervals())  # type: ignore[arg-type]  # fmt: skip

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

"""The built-in training loop, as a plain generator of records.

``prepare(config)`` does everything that can fail on bad input (device, data, model, checks against
the data) before any session exists; ``Run.records(should_stop)`` then trains and yields one
``StepMeasured`` per update, an ``EpochEnded`` per epoch, ``CurvatureMeasured`` on the curvature
schedule, and an ending event. The generator is lazy, so a consumer pauses training simply by not
asking for the next record. The per-step measurements are the step meter's (``sgdwalk.meter``),
the same one a user's own loop drives through ``sgdwalk.Walker``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from sgdwalk.config import (
    DEFAULT_PROBE,
    ConfigError,
    RunConfig,
    check_against_data,
    parse_hessian_every,
    probe_size,
)
from sgdwalk.cpu import choose_threads
from sgdwalk.curvature.hvp import batch_sharpness
from sgdwalk.data import Data, load_data
from sgdwalk.errors import Stopped
from sgdwalk.landscape import interpolation_alphas
from sgdwalk.meter import StepMeter
from sgdwalk.models import build_model, count_params, fit_notes
from sgdwalk.probe import (
    Evaluator,
    flat_params,
    has_batchnorm,
    make_chunks,
    speed_chunk,
)
from sgdwalk.ranks import GD_CHUNK, Ranks
from sgdwalk.records import (
    DIVERGED,
    FINISHED,
    INTERRUPTED,
    NOTE_EVENT,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    Record,
    StepMeasured,
)
from sgdwalk.sharpness import EdgeWatch

if TYPE_CHECKING:
    from sgdwalk.curvature import CurvatureMeter


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda was asked for but CUDA is not available on this machine")
    return torch.device(name)


class Run:
    """A prepared training run: data, model, optimizer, probe set, step meter. See ``prepare``."""

    def __init__(self, cfg: RunConfig, data: Data, model: nn.Module, device: torch.device):
        self.cfg = cfg
        self.data = data
        self.model = model
        self.device = device
        self.n_params = count_params(model)
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.batch_size = data.n_train if cfg.full_batch else int(cfg.batch_size)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.slice_mode = cfg.slice_mode  # "auto": timed on the first slices (a note says which)
        self.evaluator = Evaluator(model, slice_mode=self.slice_mode)
        self.chunk = cfg.probe_chunk or self._default_chunk()
        self.probe_n = probe_size(cfg, data.n_train)
        self.probe_idx = self._probe_indices(self.probe_n or min(DEFAULT_PROBE, data.n_train))
        self.probe_chunks = make_chunks(data.inputs(self.probe_idx), data.y_train[self.probe_idx],
                                        self.chunk)  # fmt: skip
        self.ranks = Ranks.of(model, device, len(self.probe_idx), self.chunk)
        self.evaluator.shard = self.ranks.probe
        self.meter_chunks = self.probe_chunks  # the slice's rows: this rank's under torchrun
        if self.ranks.probe is not None:
            mine = self.probe_idx[self.ranks.probe.rows]
            self.meter_chunks = make_chunks(data.inputs(mine), data.y_train[mine], self.chunk)
        self.val_chunks = make_chunks(data.inputs(slice(None), "val"), data.y_val, self.chunk)
        per_epoch = (math.floor if cfg.drop_last else math.ceil)(data.n_train / self.batch_size)
        self.steps_per_epoch = 1 if cfg.full_batch else per_epoch
        self.hessian_every = parse_hessian_every(cfg.hessian_every)
        self.curvature_meter: CurvatureMeter | None = None  # built on the first pass
        self.edge = EdgeWatch(cfg.momentum, cfg.weight_decay)  # λ1 against (2 + 2β)/η
        self.clock: Callable[[], float] = lambda: 0.0  # seconds since records() began
        self.threads_reason = ""  # how the CPU thread count was chosen (sgdwalk.cpu)
        self.notes: list[str] = []  # warnings for the start of the run (a model/data mismatch)

    def _default_chunk(self) -> int:
        """With BatchNorm the training batch (its statistics are the probe's); without, a size
        for speed alone (``speed_chunk``)."""
        if has_batchnorm(self.model):
            return GD_CHUNK if self.cfg.full_batch else self.batch_size
        x = self.data.inputs(slice(0, 2)).to(self.device)  # through the evaluator's own copy
        return speed_chunk(self.evaluator.shadow, x, self.data.y_train[:2].to(self.device))

    @property
    def alphas(self) -> list[float]:
        return interpolation_alphas(self.cfg.points)

    def _probe_indices(self, n: int) -> torch.Tensor:
        """The fixed probe set: drawn once from the training split with the session seed."""
        g = torch.Generator().manual_seed(self.cfg.seed + 7919)
        idx = torch.randperm(self.data.n_train, generator=g)[:n].sort().values
        return idx.to(self.device)

    @property
    def info(self) -> dict[str, object]:
        """What the session stores about the run beside its config (sizes, device, versions)."""
        return run_info(self)

    # ------------------------------------------------------------ the loop

    def records(
        self, should_stop: Callable[[], bool] = lambda: False, bare: bool = False
    ) -> Generator[Record, None, None]:
        """Train and yield records; ``bare`` keeps only the training fields (bench).

        ``should_stop`` is asked before each step and, through the evaluator, between the probe
        chunks and Hessian-vector products of every measurement, so a stop takes effect within
        one chunk's pass even inside a curvature pass; the run then ends interrupted.
        """
        probe = self.meter_chunks if self.probe_n is not None else None
        meter = StepMeter(self.model, self.evaluator, probe, self.cfg.points,
                          0 if bare else self.cfg.measure_every)  # fmt: skip
        self.clock = meter.elapsed
        if self.cfg.decompose:
            meter.basis = lambda: self.curvature_meter.basis() if self.curvature_meter else None
        self.evaluator.should_stop = should_stop
        at = [0, 0]  # the step and epoch reached
        try:
            yield from self._train(meter, should_stop, bare, at)
        except Stopped:
            yield _end(INTERRUPTED, at[0], at[1], meter, "stopped by request")
        finally:
            self.evaluator.should_stop = lambda: False

    def _train(
        self, meter: StepMeter, should_stop: Callable[[], bool], bare: bool, at: list[int]
    ) -> Generator[Record, None, None]:
        cfg, step = self.cfg, 0
        for note in self.notes:
            yield EventLogged(0, 0, "warning", "warning", note, meter.elapsed())
        if not bare:
            yield from self._curvature(0, 0)  # at the start, before the first update
        for epoch in range(1, cfg.epochs + 1):
            self.model.train()
            tally = Tally()
            for idx in self._batches():
                at[:] = step, epoch
                if should_stop():
                    raise Stopped
                step += 1
                rec = self._update(meter, step, epoch, idx)
                at[0] = step
                tally.add(rec)
                yield rec
                for note in self.evaluator.take_notes():  # what the slice chose for itself
                    yield EventLogged(step, epoch, "info", NOTE_EVENT, note, meter.elapsed())
                if not math.isfinite(rec.batch_loss) and not cfg.allow_divergence:
                    msg = f"loss became {rec.batch_loss} at step {step}"
                    yield _end(DIVERGED, step, epoch, meter, msg, level="error")
                    return
                if not bare and self._curvature_due("steps", step):
                    yield from self._curvature(step, epoch)
            yield self._epoch_summary(epoch, step, tally)
            if not bare and self._curvature_due("epochs", epoch):
                yield from self._curvature(step, epoch)
        yield _end(FINISHED, step, cfg.epochs, meter, f"finished {step} steps")

    def _update(self, meter: StepMeter, step: int, epoch: int, idx: torch.Tensor) -> StepMeasured:
        """One optimiser update, measured by the meter around ``optimizer.step()``."""
        loss = self._train_step(idx)
        if self.cfg.batch_sharpness:  # on the step's batch, un-augmented
            batch = self._batch_chunks(idx)
            meter.batch_curvature = lambda theta, g: batch_sharpness(self.evaluator, theta, g,
                                                                     batch)  # fmt: skip
        meter.before_update(self.model, step)
        self.optimizer.step()
        chunks = None if meter.probe is not None or not meter.due(step) else self._batch_chunks(idx)
        return meter.after_update(self.model, step, epoch, self.cfg.lr, len(idx), loss, chunks)

    def _curvature_due(self, unit: str, count: int) -> bool:
        every = self.hessian_every
        return every is not None and every[0] == unit and count % every[1] == 0

    def _curvature(self, step: int, epoch: int) -> Iterator[Record]:
        """A curvature pass at θ_step on the shadow model (sgdwalk.curvature); off: nothing."""
        if self.hessian_every is None:
            return
        if self.curvature_meter is None:
            from sgdwalk.curvature import CurvatureMeter

            self.curvature_meter = CurvatureMeter.for_run(self)
            self.curvature_meter.clock = self.clock
        self.evaluator.load(flat_params(self.model))
        for rec in self.curvature_meter.run_pass(step, epoch):
            yield rec
            if isinstance(rec, CurvatureMeasured):
                event = self.edge.check(rec, self.cfg.lr, self.clock())
                if event is not None:
                    yield event

    def _train_step(self, idx: torch.Tensor) -> torch.Tensor:
        """Forward/backward on the mini-batch (or the whole split in chunks, for GD)."""
        self.optimizer.zero_grad(set_to_none=True)
        crit = nn.functional.cross_entropy
        if self.ranks.world > 1:
            return self.ranks.train_step(self, idx)
        if not self.cfg.full_batch:
            x = self.data.train_batch(idx, self.gen)
            loss = crit(self.model(x), self.data.y_train[idx])
            loss.backward()
            return loss
        total = torch.zeros((), device=self.device)
        n = len(idx)
        for part in torch.split(idx, GD_CHUNK):
            x = self.data.train_batch(part, self.gen)
            # mean over the whole split = Σ_chunks (|chunk|/N) · mean over the chunk
            part_loss = crit(self.model(x), self.data.y_train[part]) * (len(part) / n)
            part_loss.backward()
            total += part_loss.detach()
        return total

    def _batches(self) -> Iterator[torch.Tensor]:
        n = self.data.n_train
        if self.cfg.full_batch:
            yield torch.arange(n, device=self.device)
            return
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        batches = torch.split(perm, self.batch_size)
        yield from batches[: self.steps_per_epoch]  # --drop-last leaves out a short last batch

    def _batch_chunks(self, idx: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``--probe batch``: the step's own mini-batch, un-augmented."""
        return make_chunks(self.data.inputs(idx), self.data.y_train[idx], self.chunk)

    def _epoch_summary(self, epoch: int, step: int, tally: Tally) -> EpochEnded:
        ev = self.evaluator
        ev.load(flat_params(self.model))
        train = ev.loss_and_accuracy(self.probe_chunks)
        ev.sync_buffers(self.model)
        val = ev.loss_and_accuracy(self.val_chunks, eval_mode=True)
        tl, ta, vl, va = torch.cat([train, val]).tolist()  # sync point: once per epoch
        return EpochEnded(
            epoch=epoch, steps=step, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va,
            barriers=tally.barriers, interior_min_fraction=tally.interior_fraction,
        )  # fmt: skip


@dataclass
class Tally:
    """Barriers and interior minima among an epoch's measured steps."""

    barriers: int = 0
    interior: int = 0
    measured: int = 0

    def add(self, rec: StepMeasured) -> None:
        if rec.measured:
            self.barriers += bool(rec.barrier)
            self.interior += bool(rec.interior_min)
            self.measured += 1

    @property
    def interior_fraction(self) -> float:
        return self.interior / self.measured if self.measured else 0.0


def _end(
    status: str, step: int, epoch: int, meter: StepMeter, message: str, level: str = "info"
) -> EventLogged:
    """The event that ends a run; its kind is the session's final status."""
    return EventLogged(step, epoch, level, status, message, meter.elapsed())  # type: ignore[arg-type]


def run_info(run: Run) -> dict[str, object]:
    import numpy
    import torchvision

    return {
        "device": str(run.device),
        "device_name": torch.cuda.get_device_name(run.device)
        if run.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "params": run.n_params,
        "n_train": run.data.n_train,
        "n_val": int(run.data.y_val.shape[0]),
        "input_shape": list(run.data.input_shape),
        "classes": run.data.num_classes,
        "probe_size": run.probe_n,
        "probe_chunk": run.chunk,
        "batch_size": run.batch_size,
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.steps_per_epoch * run.cfg.epochs,
        "points": run.cfg.points,
        "slice_mode": run.slice_mode,
        "threads": torch.get_num_threads(),
        "threads_reason": run.threads_reason,
        "world_size": run.ranks.world,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
            "sgdwalk": _version(),
        },
    }


def prepare(cfg: RunConfig) -> Run:
    """Load data and model and check the config against them; raises ConfigError / DataError."""
    device = choose_device(cfg.device)
    if cfg.nproc > 1 or cfg.nnodes is not None:  # one of the processes torchrun started
        from sgdwalk.shard import join_workers

        device = join_workers(device)
    threads, why = choose_threads(cfg.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.dataset, cfg.data_dir, device, cfg.download, cfg.augment, cfg.train_size)
    try:
        model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.batchnorm,
                            cfg.wrn_depth, cfg.wrn_width).to(device)  # fmt: skip
    except (RuntimeError, MemoryError) as e:  # torch's allocators say "out of memory" so
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model {cfg.model}: cannot build it on {device}: {first}") from None
    check_against_data(cfg, data.n_train, count_params(model), data.available)
    run = Run(cfg, data, model, device)
    run.threads_reason = why
    run.notes = fit_notes(cfg.model, data.input_shape)
    if run.ranks.world > 1 and has_batchnorm(model):
        run.notes.append(f"BatchNorm normalises each rank's part of the batch ({run.ranks.world} "
                         "ranks): training differs slightly from one process's; the probe's "
                         "statistics are per chunk as always (--no-batchnorm for an exact match)")  # fmt: skip
    return run


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sgdwalk")
    except PackageNotFoundError:
        return "unknown"

"""The built-in training loop, as a plain generator of records.

``prepare(config)`` does everything that can fail on bad input (device, data, model, checks against
the data) before any session exists; ``Run.records(should_stop)`` then trains and yields one
``StepMeasured`` per update, an ``EpochEnded`` per epoch, and events. The generator is lazy, so a
consumer pauses training simply by not asking for the next record.

Per measured step t (SPEC "Measurements"): g_t from the training backward, θ_t and θ_{t+1} as flat
vectors, the slice L_j = L_P(θ_t + α_j Δ_t) with L_0 reused from the previous step's L_K, and the
trajectory numbers. All of it stays on the device and is synced once per step.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from sgdwalk.config import (
    ConfigError,
    RunConfig,
    batch_alphas,
    check_against_data,
    parse_hessian_every,
    probe_size,
)
from sgdwalk.data import Data, load_data
from sgdwalk.landscape import analyze_slice
from sgdwalk.models import build_model, count_params
from sgdwalk.probe import (
    Evaluator,
    flat_grads,
    flat_params,
    has_batchnorm,
    has_convolutions,
    make_chunks,
)
from sgdwalk.records import (
    DIVERGED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    EpochEnded,
    EventLogged,
    Record,
    StepMeasured,
)
from sgdwalk.session import interpolation_alphas
from torch import nn

if TYPE_CHECKING:
    from sgdwalk.curvature import CurvatureMeter

GD_CHUNK = 1000  # examples per chunk when accumulating a full-batch gradient
NO_BN_PROBE_CHUNK = 1024  # without BatchNorm the chunk size changes nothing but speed


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda was asked for but CUDA is not available on this machine")
    return torch.device(name)


def _cos(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) = a·b / (‖a‖‖b‖); NaN when undefined (no previous vector, or a zero vector)."""
    if a is None:
        return torch.full((), float("nan"), dtype=b.dtype, device=b.device)
    return torch.dot(a, b) / (a.norm() * b.norm())


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass
class _Trail:
    """What measuring step t+1 needs from step t: θ_{t+1}, L_P(θ_{t+1}), g_t and Δ_t."""

    theta_init: torch.Tensor
    theta: torch.Tensor | None = None  # θ of the next step when known (None: read it then)
    last_loss: torch.Tensor | None = None  # the previous slice's α = 1 point, reused as L_0
    grad: torch.Tensor | None = None
    delta: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.theta = self.theta_init.clone()

    def forget(self) -> None:
        self.theta = self.last_loss = self.grad = self.delta = None


class Run:
    """A prepared training run: data, model, optimizer, probe set. See ``prepare``."""

    def __init__(self, cfg: RunConfig, data: Data, model: nn.Module, device: torch.device):
        self.cfg = cfg
        self.data = data
        self.model = model
        self.device = device
        self.status = RUNNING
        self.alphas = interpolation_alphas(cfg.points)
        self.n_params = count_params(model)
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.batch_size = data.n_train if cfg.full_batch else int(cfg.batch_size)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        bn = has_batchnorm(model)
        default_chunk = (
            (GD_CHUNK if cfg.full_batch else self.batch_size) if bn else NO_BN_PROBE_CHUNK
        )
        self.chunk = cfg.probe_chunk or default_chunk
        self.slice_mode = "vmap" if batch_alphas(cfg.slice_mode, device.type,
                                                 has_convolutions(model)) else "loop"  # fmt: skip
        self.evaluator = Evaluator(model, batch_alphas=self.slice_mode == "vmap")
        self.probe_n = probe_size(cfg, data.n_train)
        probe_idx = self._probe_indices(self.probe_n or min(2048, data.n_train))
        self.probe_idx = probe_idx
        self.probe_chunks = make_chunks(data.inputs(probe_idx), data.y_train[probe_idx], self.chunk)
        self.val_chunks = make_chunks(data.inputs(slice(None), "val"), data.y_val, self.chunk)
        per_epoch = (math.floor if cfg.drop_last else math.ceil)(data.n_train / self.batch_size)
        self.steps_per_epoch = 1 if cfg.full_batch else per_epoch
        self.hessian_every = parse_hessian_every(cfg.hessian_every)
        self.curvature_meter: CurvatureMeter | None = None  # built on the first pass

    def _probe_indices(self, n: int) -> torch.Tensor:
        """The fixed probe set: drawn once from the training split with the session seed."""
        g = torch.Generator().manual_seed(self.cfg.seed + 7919)
        idx = torch.randperm(self.data.n_train, generator=g)[:n].sort().values
        return idx.to(self.device)

    @property
    def info(self) -> dict[str, object]:
        import numpy
        import torchvision

        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else platform.processor() or platform.machine(),
            "params": self.n_params,
            "n_train": self.data.n_train,
            "n_val": int(self.data.y_val.shape[0]),
            "input_shape": list(self.data.input_shape),
            "classes": self.data.num_classes,
            "probe_size": self.probe_n,
            "probe_chunk": self.chunk,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.steps_per_epoch * self.cfg.epochs,
            "points": self.cfg.points,
            "slice_mode": self.slice_mode,
            "threads": torch.get_num_threads(),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "numpy": numpy.__version__,
                "sgdwalk": _version(),
            },
        }

    # ------------------------------------------------------------ the loop

    def records(
        self, should_stop: Callable[[], bool] = lambda: False, measure: bool = True
    ) -> Generator[Record, None, None]:
        """Train and yield records; ``measure=False`` keeps only the training fields (bench)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.status = RUNNING
        every = cfg.measure_every if measure else 0
        trail = _Trail(flat_params(self.model))
        step = 0
        if measure:
            yield from self._curvature(0, 0)  # at the start, before the first update
        for epoch in range(1, cfg.epochs + 1):
            self.model.train()
            barriers = interior = measured = 0
            for idx in self._batches():
                if should_stop():
                    yield self._end(INTERRUPTED, step, epoch, t0, "stopped by request")
                    return
                step += 1
                rec = self._step(step, epoch, idx, trail, every, t0)
                if rec.measured:
                    barriers += bool(rec.barrier)
                    interior += bool(rec.interior_min)
                    measured += 1
                yield rec
                if not math.isfinite(rec.batch_loss) and not cfg.allow_divergence:
                    msg = f"loss became {rec.batch_loss} at step {step}"
                    yield self._end(DIVERGED, step, epoch, t0, msg, level="error")
                    return
                if measure and self._curvature_due("steps", step):
                    yield from self._curvature(step, epoch)
            yield self._epoch_summary(epoch, step, barriers, interior, measured)
            if measure and self._curvature_due("epochs", epoch):
                yield from self._curvature(step, epoch)
        yield self._end(FINISHED, step, cfg.epochs, t0, f"finished {step} steps")

    def _step(
        self, step: int, epoch: int, idx: torch.Tensor, trail: _Trail, every: int, t0: float
    ) -> StepMeasured:
        """One update; measured when ``(step − 1) % every == 0`` (every = 0: never)."""
        measure_now = every > 0 and (step - 1) % every == 0
        keep = every > 0 and step % every == 0  # step t+1 is measured: it needs g_t and Δ_t
        track = measure_now or keep
        theta = trail.theta if trail.theta is not None or not track else flat_params(self.model)
        loss = self._train_step(idx)
        grad = flat_grads(self.model) if track else None
        self.optimizer.step()
        if grad is None or theta is None:
            trail.forget()
            # sync point: once per unmeasured step
            return StepMeasured(
                step, epoch, self.cfg.lr, len(idx), loss.item(), time.perf_counter() - t0
            )
        theta_next = flat_params(self.model)
        delta = theta_next - theta
        if measure_now:
            rec = self._measure(step, epoch, idx, loss, grad, (theta, theta_next, delta), trail, t0)
        else:
            rec = StepMeasured(
                step, epoch, self.cfg.lr, len(idx), loss.item(), time.perf_counter() - t0
            )
            trail.last_loss = None
        if keep:
            trail.theta, trail.grad, trail.delta = theta_next, grad, delta
        else:
            trail.forget()
        return rec

    def _measure(
        self, step: int, epoch: int, idx: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor,
        move: tuple[torch.Tensor, torch.Tensor, torch.Tensor], trail: _Trail, t0: float,
    ) -> StepMeasured:  # fmt: skip
        """The slice and trajectory numbers of step t, synced to the host once."""
        fixed = self.probe_n is not None
        chunks = self.probe_chunks if fixed else self._batch_chunks(idx)
        first = trail.last_loss if fixed else None
        theta, theta_next, delta = move  # θ_t, θ_{t+1} (loaded exactly at the ends), Δ_t
        losses = self.evaluator.slice(theta, theta_next, self.alphas, chunks, first)
        stats = torch.stack([
            loss.detach().to(losses.dtype), grad.norm(), delta.norm(),
            (theta_next - trail.theta_init).norm(), _cos(trail.grad, grad), _cos(trail.delta, delta),
        ])  # fmt: skip
        values = torch.cat([losses, stats]).tolist()  # sync point: once per measured step
        trail.last_loss = losses[-1]
        return self._measured(step, epoch, len(idx), values, t0)

    def _curvature_due(self, unit: str, count: int) -> bool:
        every = self.hessian_every
        return every is not None and every[0] == unit and count % every[1] == 0

    def _curvature(self, step: int, epoch: int) -> Iterator[Record]:
        """A curvature pass at θ_step on the shadow model (engine/curvature); off: nothing."""
        if self.hessian_every is None:
            return
        if self.curvature_meter is None:
            from sgdwalk.curvature import CurvatureMeter

            self.curvature_meter = CurvatureMeter.for_run(self)
        self.evaluator.load(flat_params(self.model))
        yield from self.curvature_meter.measure(step, epoch)

    def _train_step(self, idx: torch.Tensor) -> torch.Tensor:
        """Forward/backward on the mini-batch (or the whole split in chunks, for GD)."""
        self.optimizer.zero_grad(set_to_none=True)
        crit = nn.functional.cross_entropy
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

    def _measured(
        self, step: int, epoch: int, batch_size: int, values: list[float], t0: float
    ) -> StepMeasured:
        k1 = len(self.alphas)
        losses, (batch_loss, gnorm, snorm, dist, gcos, ucos) = values[:k1], values[k1:]
        s = analyze_slice(losses, self.alphas)
        return StepMeasured(
            step=step, epoch=epoch, lr=self.cfg.lr, batch_size=batch_size,
            batch_loss=batch_loss, elapsed=time.perf_counter() - t0, grad_norm=gnorm,
            alphas=self.alphas, slice=losses, barrier=s.barrier, barrier_height=s.barrier_height,
            floor_loss=s.floor_loss, floor_alpha=s.floor_alpha, interior_min=s.interior_min,
            height_above_floor=s.height_above_floor, step_norm=snorm, dist_from_init=dist,
            grad_cos=_none_if_nan(gcos), update_cos=_none_if_nan(ucos),
        )  # fmt: skip

    def _epoch_summary(
        self, epoch: int, step: int, barriers: int, interior: int, measured: int
    ) -> EpochEnded:
        ev = self.evaluator
        ev.load(flat_params(self.model))
        train = ev.loss_and_accuracy(self.probe_chunks)
        ev.sync_buffers(self.model)
        val = ev.loss_and_accuracy(self.val_chunks, eval_mode=True)
        tl, ta, vl, va = torch.cat([train, val]).tolist()  # sync point: once per epoch
        return EpochEnded(
            epoch=epoch, steps=step, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va,
            barriers=barriers, interior_min_fraction=interior / measured if measured else 0.0,
        )  # fmt: skip

    def _end(
        self, status: str, step: int, epoch: int, t0: float, message: str, level: str = "info"
    ) -> EventLogged:
        self.status = status
        return EventLogged(step, epoch, level, status, message, time.perf_counter() - t0)


def prepare(cfg: RunConfig) -> Run:
    """Load data and model and check the config against them; raises ConfigError / DataError."""
    device = choose_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.dataset, cfg.data_dir, device, cfg.download, cfg.augment, cfg.train_size)
    model = build_model(
        cfg.model, data.input_shape, data.num_classes, cfg.batchnorm, cfg.wrn_depth, cfg.wrn_width
    ).to(device)
    check_against_data(cfg, data.n_train, count_params(model))
    return Run(cfg, data, model, device)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sgdwalk")
    except PackageNotFoundError:
        return "unknown"

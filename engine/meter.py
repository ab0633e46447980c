"""The step meter: the paper's per-step measurements around one optimiser update.

Why a small object driven from outside: all a training loop can offer a measurement is the moment
before an update (the gradient is there, the parameters are still θ_t) and the moment after (θ_{t+1}).
The meter asks for nothing else, so the built-in trainer and a user's own loop (``sgdwalk.Walker``,
through optimizer hooks) measure through the same code:

    meter.before_update(model, step)      # after backward, before optimizer.step(): θ_t and g_t
    optimizer.step()
    rec = meter.after_update(model, step, epoch, lr, batch_size, batch_loss)

The Instrument (``sgdwalk.instrument``) builds it and drives it for both clients.

Per measured step t: g_t (the gradient the update used), θ_t and θ_{t+1} as flat vectors, the slice
L_j = L_P(θ_t + α_j Δ_t) with L_0 reused from the previous step's L_K (so a step costs K forward
passes of the probe set, not K+1), and the trajectory numbers. Everything stays on the device and is
synced to the host once per measured step. When only some steps are measured (every N-th, or a
random share: ``sgdwalk.sampling``), the step before a measured one keeps θ, g and Δ so that the
cosines are still of consecutive steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sgdwalk.landscape import analyze_slice, interpolation_alphas
from sgdwalk.probe import Chunks, Evaluator, flat_grads, flat_params
from sgdwalk.records import StepMeasured
from sgdwalk.sampling import Sampler
from sgdwalk.shard import Shard
from sgdwalk.slicing import Slicer

Basis = Callable[[], "tuple[torch.Tensor, int] | None"]  # latest top-k eigenvectors, their step


def cosine(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
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

    def forget(self) -> None:
        self.theta = self.last_loss = self.grad = self.delta = None


class StepMeter:
    """Measures optimiser updates of one model on a fixed probe set (or each step's own batch).

    ``probe``: this rank's probe chunks, or None when each step slices its own batch (pass it to
    ``before_update``). ``sampler``: which steps are measured (``sgdwalk.sampling``; by default
    every one; ``Sampler(every=0)``: none, the training fields only). ``shard``: the
    probe's rows across ranks. ``basis`` (``--decompose``): the latest top-k eigenvectors, to split
    each step by. ``batch_sharpness``: g_Bᵀ H_B g_B / ‖g_B‖² on each measured step's batch.
    ``clock``: the run's seconds, for the records.
    """

    def __init__(
        self, model: nn.Module, slicer: Slicer, probe: Chunks | None, points: int = 10, *,
        sampler: Sampler | None = None, shard: Shard | None = None, basis: Basis | None = None,
        batch_sharpness: bool = False, clock: Callable[[], float] | None = None,
    ) -> None:  # fmt: skip
        self.slicer, self.evaluator = slicer, slicer.ev
        self.probe, self.shard = probe, shard
        self.alphas = interpolation_alphas(points)
        self.sampler = sampler or Sampler()
        self.basis = basis or (lambda: None)
        self.batch_sharpness = batch_sharpness
        self.clock = clock or _since(time.perf_counter())
        self.trail = _Trail(flat_params(model))
        self.trail.theta = self.trail.theta_init.clone()
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None  # θ_t, g_t of this update
        self._batch: Chunks | None = None  # this step's own batch, when it is needed
        self._batch_value: torch.Tensor | None = None
        self.gradless = 0  # steps begun with no gradient at all

    def due(self, step: int) -> bool:
        """Whether ``step`` is measured (the sampler's choice, drawn once a step)."""
        return self.sampler.due(step)

    def wants_batch(self, step: int) -> bool:
        """Whether ``before_update`` needs the step's batch (``--probe batch``, batch sharpness)."""
        return self.due(step) and (self.probe is None or self.batch_sharpness)

    def before_update(self, model: nn.Module, step: int, batch: Chunks | None = None) -> None:
        """Take θ_t and g_t, if this step or the next is measured (the next needs g_t, Δ_t);
        ``batch``: the step's own examples, un-augmented, when ``wants_batch``."""
        self._batch, self._batch_value = batch, None
        if not (self.due(step) or self.due(step + 1)):
            self._before = None
            return
        theta = self.trail.theta if self.trail.theta is not None else flat_params(model)
        known = any(p.grad is not None for p in model.parameters())  # not so under LBFGS's pre-hook
        self.gradless += not known  # (the gradient is unknown, not zero: NaN)
        self._before = (theta, flat_grads(model) if known else torch.full_like(theta, math.nan))
        if self.batch_sharpness and self.due(step) and batch:
            from sgdwalk.curvature.hvp import batch_sharpness

            self._batch_value = batch_sharpness(self.evaluator, *self._before, batch)  # at θ_t

    def discard(self) -> None:
        """Forget the update begun with ``before_update``: it was not taken (a skipped step)."""
        self._before = None
        self.trail.forget()

    def after_update(
        self, model: nn.Module, step: int, epoch: int, lr: float, batch_size: int,
        batch_loss: torch.Tensor | float,
    ) -> StepMeasured:  # fmt: skip
        """The record of the update just taken; measured when ``due(step)``."""
        loss = torch.as_tensor(batch_loss).detach()
        where = (step, epoch, lr, batch_size)
        if self._before is None:
            self.trail.forget()
            return self._training_only(where, loss)
        theta, grad = self._before
        self._before = None
        theta_next = flat_params(model)
        delta = theta_next - theta
        if self.due(step):
            rec = self._measured(where, loss, (theta, theta_next, delta, grad))
        else:
            rec = self._training_only(where, loss)
            self.trail.last_loss = None
        if self.due(step + 1):
            self.trail.theta, self.trail.grad, self.trail.delta = theta_next, grad, delta
        else:
            self.trail.forget()
        return rec

    def _training_only(self, where: Where, loss: torch.Tensor) -> StepMeasured:
        value = loss.item()  # sync point: once per unmeasured step
        return StepMeasured(*where, value, self.clock())

    def _measured(self, where: Where, loss: torch.Tensor, move: Move) -> StepMeasured:
        """The slice and trajectory numbers of step t, synced to the host once."""
        theta, theta_next, delta, grad = move  # θ_t, θ_{t+1} (loaded exactly at the ends), Δ_t, g_t
        fixed = self.probe is not None
        basis = self.basis() if fixed else None
        both = self._probe_losses(theta, theta_next, basis)
        k1 = len(self.alphas)
        losses, split = both[:k1], both[k1:]
        trail = self.trail
        stats = torch.stack([
            loss.to(losses.dtype), grad.norm(), delta.norm(), (theta_next - trail.theta_init).norm(),
            cosine(trail.grad, grad), cosine(trail.delta, delta),
        ])  # fmt: skip
        if basis is not None:
            proj = basis[0].T @ delta  # V_kᵀΔ: ‖V_kV_kᵀΔ‖ = ‖V_kᵀΔ‖ (orthonormal columns)
            frac = (proj @ proj / (delta @ delta)).reshape(1).to(losses.dtype)
            split = torch.cat([frac.to(losses.device), split])
        sharp = [] if self._batch_value is None else [self._batch_value.reshape(1).to(losses)]
        values = torch.cat([losses, stats.to(losses.device), split, *sharp]).tolist()  # one sync
        trail.last_loss = losses[-1] if fixed else None
        extra: dict[str, object] = {}
        if basis is not None:
            frac_v, dom, bulk = values[k1 + 6 : k1 + 9]
            extra = {"dominant_fraction": frac_v, "dominant_loss": dom, "bulk_loss": bulk,
                     "basis_step": basis[1]}  # fmt: skip
        if self._batch_value is not None:
            extra["batch_sharpness"] = values[-1]
        return self._record(where, values[: k1 + 6], extra)

    def _probe_losses(
        self, theta: torch.Tensor, theta_next: torch.Tensor,
        basis: tuple[torch.Tensor, int] | None,
    ) -> torch.Tensor:  # fmt: skip
        """[L_0..L_K] (and, with a basis, the losses of the step's two parts), averaged over
        the ranks in one all_reduce; a rank with no probe rows adds zeros."""
        fixed = self.probe is not None
        probe = self.probe if fixed else self._batch
        assert probe is not None, "a meter without a probe set needs the step's batch"
        shard = self.shard if fixed else None
        if shard is not None and not shard.local:
            size = len(self.alphas) + (2 if basis is not None else 0)
            return shard.mean_of(torch.zeros(size, dtype=theta.dtype, device=theta.device))
        first = self.trail.last_loss if fixed else None
        local = self.slicer.losses(theta, theta_next, self.alphas, probe, first)
        if basis is not None:
            parts = split_losses(self.evaluator, theta, theta_next - theta, basis[0], probe)
            local = torch.cat([local, parts])
        return local if shard is None else shard.mean_of(local)

    def _record(self, where: Where, values: list[float], extra: dict[str, object]) -> StepMeasured:
        k1 = len(self.alphas)
        losses, (batch_loss, gnorm, snorm, dist, gcos, ucos) = values[:k1], values[k1:]
        s = analyze_slice(losses, self.alphas)
        step, epoch, lr, batch_size = where
        return StepMeasured(
            step=step, epoch=epoch, lr=lr, batch_size=batch_size, batch_loss=batch_loss,
            elapsed=self.clock(), grad_norm=gnorm, alphas=self.alphas, slice=losses,
            barrier=s.barrier, barrier_height=s.barrier_height, floor_loss=s.floor_loss,
            floor_alpha=s.floor_alpha, interior_min=s.interior_min,
            height_above_floor=s.height_above_floor, step_norm=snorm, dist_from_init=dist,
            grad_cos=_none_if_nan(gcos), update_cos=_none_if_nan(ucos), **extra,  # type: ignore[arg-type]
        )  # fmt: skip


def split_losses(
    ev: Evaluator, theta: torch.Tensor, delta: torch.Tensor, v: torch.Tensor, probe: Chunks
) -> torch.Tensor:
    """[L_P(θ + V_kV_kᵀΔ), L_P(θ + (I − V_kV_kᵀ)Δ)]: two forward passes of the probe."""
    dominant = v @ (v.T @ delta)
    out = []
    for part in (dominant, delta - dominant):
        ev.load_between(theta, part, 1.0)
        out.append(ev.loss(probe))
    return torch.stack(out)


Where = tuple[int, int, float, int]  # step, epoch, lr, batch size
Move = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # θ_t, θ_{t+1}, Δ_t, g_t


def _since(start: float) -> Callable[[], float]:
    return lambda: time.perf_counter() - start

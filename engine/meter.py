"""The step meter: the paper's per-step measurements around one optimiser update.

Why a small object driven from outside: all a training loop can offer a measurement is the moment
before an update (the gradient is there, the parameters are still θ_t) and the moment after (θ_{t+1}).
The meter asks for nothing else, so the built-in trainer and a user's own loop (``sgdwalk.Walker``,
through optimizer hooks) measure through the same code:

    meter.before_update(model, step)      # after backward, before optimizer.step(): θ_t and g_t
    optimizer.step()
    rec = meter.after_update(model, step, epoch, lr, batch_size, batch_loss)

Per measured step t: g_t (the gradient the update used), θ_t and θ_{t+1} as flat vectors, the slice
L_j = L_P(θ_t + α_j Δ_t) with L_0 reused from the previous step's L_K (so a step costs K forward
passes of the probe set, not K+1), and the trajectory numbers. Everything stays on the device and is
synced to the host once per measured step. With ``measure_every`` N > 1 only every N-th step is
measured; the step before it keeps θ, g and Δ so that the cosines are still of consecutive steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sgdwalk.landscape import analyze_slice, interpolation_alphas
from sgdwalk.probe import Chunks, Evaluator, flat_grads, flat_params
from sgdwalk.records import StepMeasured
from sgdwalk.slicing import slice_losses


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

    ``probe``: the probe set's chunks, or None for ``--probe batch`` (pass each step's chunks to
    ``after_update``). ``measure_every``: 0 never measures (training fields only).
    """

    def __init__(
        self,
        model: nn.Module,
        evaluator: Evaluator,
        probe: Chunks | None,
        points: int = 10,
        measure_every: int = 1,
    ) -> None:
        self.evaluator = evaluator
        self.probe = probe
        self.alphas = interpolation_alphas(points)
        self.every = measure_every
        self.trail = _Trail(flat_params(model))
        self.trail.theta = self.trail.theta_init.clone()
        self.started = time.perf_counter()
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None  # θ_t, g_t of this update
        # --decompose: the top-k eigenvectors (n, k) of the latest curvature pass and its step
        self.basis: Callable[[], tuple[torch.Tensor, int] | None] = lambda: None
        # --batch-sharpness: (θ_t, g_t) -> g_Bᵀ H_B g_B / ‖g_B‖² on this step's batch, or None
        self.batch_curvature: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self._batch_value: torch.Tensor | None = None

    def due(self, step: int) -> bool:
        """Whether ``step`` is measured: every ``measure_every``-th step from the first."""
        return self.every > 0 and (step - 1) % self.every == 0

    def before_update(self, model: nn.Module, step: int) -> None:
        """Take θ_t and g_t, if this step or the next is measured (the next needs g_t, Δ_t)."""
        if not (self.due(step) or self.due(step + 1)):
            self._before = None
            return
        theta = self.trail.theta if self.trail.theta is not None else flat_params(model)
        self._before = (theta, flat_grads(model))
        self._batch_value = None
        if self.batch_curvature is not None and self.due(step):
            self._batch_value = self.batch_curvature(*self._before)  # at θ_t, before the update

    def discard(self) -> None:
        """Forget the update begun with ``before_update``: it was not taken (a skipped step)."""
        self._before = None
        self.trail.forget()

    def after_update(
        self, model: nn.Module, step: int, epoch: int, lr: float, batch_size: int,
        batch_loss: torch.Tensor | float, chunks: Chunks | None = None,
    ) -> StepMeasured:  # fmt: skip
        """The record of the update just taken; measured when ``due(step)``.

        ``chunks``: the step's own batch, for a meter without a fixed probe set.
        """
        loss = torch.as_tensor(batch_loss).detach()
        if self._before is None:
            self.trail.forget()
            return self._training_only(step, epoch, lr, batch_size, loss)
        theta, grad = self._before
        self._before = None
        theta_next = flat_params(model)
        delta = theta_next - theta
        if self.due(step):
            rec = self._slice_and_trajectory(step, epoch, lr, batch_size, loss,
                                            (theta, theta_next, delta, grad), chunks)  # fmt: skip
        else:
            rec = self._training_only(step, epoch, lr, batch_size, loss)
            self.trail.last_loss = None
        if self.due(step + 1):
            self.trail.theta, self.trail.grad, self.trail.delta = theta_next, grad, delta
        else:
            self.trail.forget()
        return rec

    def _training_only(
        self, step: int, epoch: int, lr: float, batch_size: int, loss: torch.Tensor
    ) -> StepMeasured:
        value = loss.item()  # sync point: once per unmeasured step
        return StepMeasured(step, epoch, lr, batch_size, value, self.elapsed())

    def _slice_and_trajectory(
        self, step: int, epoch: int, lr: float, batch_size: int, loss: torch.Tensor,
        move: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], chunks: Chunks | None,
    ) -> StepMeasured:  # fmt: skip
        """The slice and trajectory numbers of step t, synced to the host once."""
        theta, theta_next, delta, grad = move  # θ_t, θ_{t+1} (loaded exactly at the ends), Δ_t, g_t
        fixed = self.probe is not None
        probe = self.probe if self.probe is not None else chunks
        assert probe is not None, "a meter without a probe set needs the step's chunks"
        first = self.trail.last_loss if fixed else None
        shard = self.evaluator.shard if fixed else None
        basis = self.basis() if fixed else None
        k1 = len(self.alphas)
        if shard is None or shard.local:
            local = slice_losses(self.evaluator, theta, theta_next, self.alphas, probe, first)
            if basis is not None:
                local = torch.cat([local, self.split_losses(theta, delta, basis[0], probe)])
        else:  # a rank with no probe rows: zeros, and the same all_reduce as the others
            local = torch.zeros(k1 + (2 if basis is not None else 0), dtype=theta.dtype,
                                device=theta.device)  # fmt: skip
        both = local if shard is None else shard.mean_of(local)  # one all_reduce per step
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
        rec = self._record(step, epoch, lr, batch_size, values[: k1 + 6])
        extra: dict[str, object] = {}
        if basis is not None:
            frac_v, dom, bulk = values[k1 + 6 : k1 + 9]
            extra = {"dominant_fraction": frac_v, "dominant_loss": dom, "bulk_loss": bulk,
                     "basis_step": basis[1]}  # fmt: skip
        if self._batch_value is not None:
            extra["batch_sharpness"] = values[-1]
        return dataclasses.replace(rec, **extra) if extra else rec  # type: ignore[arg-type]

    def split_losses(
        self, theta: torch.Tensor, delta: torch.Tensor, v: torch.Tensor, probe: Chunks
    ) -> torch.Tensor:
        """[L_P(θ + V_kV_kᵀΔ), L_P(θ + (I − V_kV_kᵀ)Δ)]: two forward passes of the probe."""
        dominant = v @ (v.T @ delta)
        out = []
        for part in (dominant, delta - dominant):
            self.evaluator.load_between(theta, part, 1.0)
            out.append(self.evaluator.loss(probe))
        return torch.stack(out)

    def _record(
        self, step: int, epoch: int, lr: float, batch_size: int, values: list[float]
    ) -> StepMeasured:
        k1 = len(self.alphas)
        losses, (batch_loss, gnorm, snorm, dist, gcos, ucos) = values[:k1], values[k1:]
        s = analyze_slice(losses, self.alphas)
        return StepMeasured(
            step=step, epoch=epoch, lr=lr, batch_size=batch_size, batch_loss=batch_loss,
            elapsed=self.elapsed(), grad_norm=gnorm, alphas=self.alphas, slice=losses,
            barrier=s.barrier, barrier_height=s.barrier_height, floor_loss=s.floor_loss,
            floor_alpha=s.floor_alpha, interior_min=s.interior_min,
            height_above_floor=s.height_above_floor, step_norm=snorm, dist_from_init=dist,
            grad_cos=_none_if_nan(gcos), update_cos=_none_if_nan(ucos),
        )  # fmt: skip

    def elapsed(self) -> float:
        """Seconds since the meter started (the records' ``elapsed``)."""
        return time.perf_counter() - self.started

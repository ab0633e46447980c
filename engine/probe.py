"""Evaluating the loss on the probe set at parameters other than the model's own.

Why a shadow copy: measurement code must leave the trained model exactly as it found it
(parameters, BatchNorm buffers, train/eval mode, RNG state). The evaluator owns a private copy of the
network whose parameters are views into ONE flat buffer, so moving it to θ_t + α Δ_t is a single
fused ``add`` into that buffer, and a forward pass is an ordinary module call: no per-call
re-parametrisation overhead (``torch.func.functional_call`` costs tens of microseconds a call, which
on a small MLP is as much as the forward pass itself). The trained model is never written to.

How a slice's K points are evaluated (a loop of passes, or one vmapped pass) is ``sgdwalk.slicing``.

Probe semantics (README "What is measured"): no augmentation, dropout off, BatchNorm normalising with batch
statistics over chunks of the training batch size, running buffers of the real model untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sgdwalk.batches import index_batch
from sgdwalk.errors import Stopped

Chunks = Sequence[tuple[Any, torch.Tensor]]  # (inputs, labels); see ``Criterion``
# A chunk's loss summed over its examples: cross-entropy of module(x) against y by default; a user's
# loss (``sgdwalk.batches.SummedLoss``) takes the whole batch as x and y only for its length.
Criterion = Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]


def cross_entropy_sum(module: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(module(x), y, reduction="sum")


def flat_params(model: nn.Module) -> torch.Tensor:
    """θ as one new flat vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def flat_grads(model: nn.Module) -> torch.Tensor:
    """∇θ of the last backward as one flat vector (zeros where a parameter got no gradient)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
            for p in model.parameters()
        ]
    )


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def set_probe_mode(module: nn.Module) -> None:
    """BatchNorm in train mode (batch statistics), everything else (dropout) in eval mode."""
    for m in module.modules():
        m.training = isinstance(m, _BatchNorm)


def activations_per_example(
    module: nn.Module, x: Any, y: torch.Tensor, criterion: Criterion = cross_entropy_sum
) -> float:
    """Elements all leaf modules output for one example (forward hooks on two examples, no grad).

    An upper bound on what a forward pass holds at once, which frees each output once used.
    """
    count = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            count[0] += out.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    n = min(2, int(y.shape[0]))  # two examples: BatchNorm in train mode needs more than one
    try:
        with torch.no_grad():
            criterion(module, index_batch(x, slice(0, n)), y[:n])
    finally:
        for h in handles:
            h.remove()
    return count[0] / n


CHUNK = 1024  # probe examples per forward pass without BatchNorm, off a CPU (and the most on one)
CPU_CHUNK_BYTES = 16 << 20  # on a CPU: a chunk's layer outputs stay about this size


def speed_chunk(
    model: nn.Module, x: Any, y: torch.Tensor, criterion: Criterion = cross_entropy_sum
) -> int:
    """Probe examples per forward pass where the chunk changes only speed (no BatchNorm).

    On a CPU, the power of two (64 to ``CHUNK``) whose layer outputs fit ``CPU_CHUNK_BYTES``: a
    chunk past the caches runs slower per example, and a fresh large block is page-faulted anew
    on every pass (measured, one forward of 2,048 CIFAR-shaped examples through the small CNN:
    452 ms in one chunk, 433 ms in chunks of 1,024, 240 ms in chunks of 64; the paper's MNIST MLP
    is fastest from 512 up: 15 ms). Elsewhere ``CHUNK``.
    """
    ref = next(model.parameters())
    if ref.device.type != "cpu":
        return CHUNK
    try:
        per_example = activations_per_example(model, x, y, criterion) * ref.element_size()
    except (RuntimeError, ValueError, TypeError, IndexError):  # a model that needs more examples
        return CHUNK
    rows = 64
    while rows < CHUNK and 2 * rows * per_example <= CPU_CHUNK_BYTES:
        rows *= 2
    return rows


def probe_chunk(ev: Evaluator, two: tuple[Any, torch.Tensor], with_batchnorm: int) -> int:
    """Probe examples per forward pass: ``with_batchnorm`` for a model with BatchNorm (which
    normalises each chunk with its own statistics, so the chunk is the training batch, as in
    training); otherwise a size for speed alone, found by running ``two`` probe examples through
    the evaluator's private copy (the user's model stays untouched)."""
    if has_batchnorm(ev.shadow):
        return with_batchnorm
    return speed_chunk(ev.shadow, *two, ev.criterion)


class Evaluator:
    """A private copy of ``model`` whose parameters live in the flat buffer ``self.flat``: the
    shadow model, moved to any θ and evaluated there. ``criterion``: a chunk's summed loss
    (cross-entropy by default). How slices are evaluated on it is ``sgdwalk.slicing.Slicer``."""

    def __init__(self, model: nn.Module, criterion: Criterion | None = None):
        self.criterion = criterion or cross_entropy_sum
        self.should_stop: Callable[[], bool] = lambda: False  # asked between chunks
        self.shadow = copy.deepcopy(model)
        params = list(self.shadow.parameters())
        ref = params[0]
        self.flat = torch.empty(sum(p.numel() for p in params), dtype=ref.dtype, device=ref.device)
        offset = 0
        for p in params:
            n = p.numel()
            self.flat[offset : offset + n].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + n].view_as(p)
            p.grad = None
            p.requires_grad_(False)
            offset += n
        self.params = params
        self.numel = offset
        set_probe_mode(self.shadow)

    def checkpoint(self) -> None:
        """Raise ``Stopped`` when a stop was asked for (called between probe chunks)."""
        if self.should_stop():
            raise Stopped

    # -- positioning

    def load(self, theta: torch.Tensor) -> None:
        self.flat.copy_(theta)

    def load_between(self, theta0: torch.Tensor, delta: torch.Tensor, alpha: float) -> None:
        """θ = θ0 + α Δ, written straight into the shadow's parameter storage."""
        torch.add(theta0, delta, alpha=alpha, out=self.flat)

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy the real model's buffers (BatchNorm running stats) for an eval-mode pass."""
        with torch.no_grad():
            for mine, theirs in zip(self.shadow.buffers(), model.buffers(), strict=True):
                mine.copy_(theirs)

    # -- evaluating (all results stay on the device: the caller decides when to sync)

    @torch.no_grad()
    def loss(self, chunks: Chunks) -> torch.Tensor:
        """L_P(θ) = (1/|P|) Σ_chunks Σ_i CE(f_θ(x_i), y_i), as a 0-d device tensor."""
        total = torch.zeros((), dtype=self.flat.dtype, device=self.flat.device)
        n = 0
        for x, y in chunks:
            self.checkpoint()
            total += self.criterion(self.shadow, x, y)
            n += y.shape[0]
        return total / n

    @torch.no_grad()
    def loss_and_accuracy(self, chunks: Chunks, eval_mode: bool = False) -> torch.Tensor:
        """[mean loss, accuracy] as a device tensor; ``eval_mode`` uses running BN statistics."""
        if eval_mode:
            self.shadow.eval()
        try:
            total = torch.zeros(2, dtype=torch.float64, device=self.flat.device)
            n = 0
            for x, y in chunks:
                self.checkpoint()
                logits = self.shadow(x)
                total[0] += nn.functional.cross_entropy(logits, y, reduction="sum").double()
                total[1] += (logits.argmax(1) == y).sum()
                n += y.shape[0]
            return total / max(n, 1)
        finally:
            set_probe_mode(self.shadow)

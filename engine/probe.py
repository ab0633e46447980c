"""Evaluating the loss on the probe set at parameters other than the model's own.

Why a shadow copy: measurement code must leave the trained model exactly as it found it
(parameters, BatchNorm buffers, train/eval mode, RNG state). The evaluator owns a private copy of the
network whose parameters are views into ONE flat buffer, so moving it to θ_t + α Δ_t is a single
fused ``add`` into that buffer, and a forward pass is an ordinary module call: no per-call
re-parametrisation overhead (``torch.func.functional_call`` costs tens of microseconds a call, which
on a small MLP is as much as the forward pass itself). The trained model is never written to.

The slice can also evaluate its K points in one batched pass (``slice_mode="vmap"``): the K parameter
vectors are stacked and ``torch.func.vmap`` runs ``functional_call`` over them, so each probe chunk
is read once per step instead of K times and each layer becomes one batched kernel. On CUDA that
beats K launches of small kernels; on a CPU it pays off for dense layers only (measured: an MLP's
slice 1.45x faster, a small CNN's 1.5x slower, because vmapped convolutions run as grouped
convolutions), hence ``--slice-mode``'s ``auto`` rule in ``sgdwalk.config``.

Probe semantics (SPEC "Probe set"): no augmentation, dropout off, BatchNorm normalising with batch
statistics over chunks of the training batch size, running buffers of the real model untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Chunks = Sequence[tuple[torch.Tensor, torch.Tensor]]


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


def make_chunks(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(torch.split(x, size), torch.split(y, size), strict=True))


VMAP_PARAM_BYTES = 1 << 30  # the stacked parameter vectors of one batched pass stay under this
VMAP_ACTIVATION_BYTES = 1 << 30  # and its layer outputs (on CUDA: a quarter of the free memory)


def activations_per_example(module: nn.Module, x: torch.Tensor) -> float:
    """Elements all leaf modules output for one example (forward hooks on two examples, no grad).

    An upper bound on what a forward pass holds at once, which frees each output once used.
    """
    count = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            count[0] += out.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    few = x[:2]  # two examples: BatchNorm in train mode needs more than one value per channel
    try:
        with torch.no_grad():
            module(few)
    finally:
        for h in handles:
            h.remove()
    return count[0] / few.shape[0]


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


class Evaluator:
    """A private copy of ``model`` whose parameters live in the flat buffer ``self.flat``.

    ``slice_mode``: "loop" (one pass per slice point) or "vmap" (the points in batched passes; see
    the module notes).
    """

    def __init__(self, model: nn.Module, slice_mode: str = "loop"):
        if slice_mode not in ("loop", "vmap"):
            raise ValueError(f"slice_mode must be 'loop' or 'vmap', got {slice_mode!r}")
        self.slice_mode = slice_mode
        self._functional: nn.Module | None = None  # built on the first batched pass
        self._per_pass: dict[int, int] = {}  # points per vmapped pass, by probe chunk rows
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
            total += nn.functional.cross_entropy(self.shadow(x), y, reduction="sum")
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
                logits = self.shadow(x)
                total[0] += nn.functional.cross_entropy(logits, y, reduction="sum").double()
                total[1] += (logits.argmax(1) == y).sum()
                n += y.shape[0]
            return total / max(n, 1)
        finally:
            set_probe_mode(self.shadow)

    def slice(
        self,
        theta0: torch.Tensor,
        theta1: torch.Tensor,
        alphas: Sequence[float],
        chunks: Chunks,
        first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[L_P(θ0 + α_j Δ) for j = 0..K] with Δ = θ1 − θ0, as one device vector.

        ``first`` is L_P(θ0) when the caller already has it (the previous step's α = 1 point): a
        step then costs K forward passes, not K+1. The end points load θ0 and θ1 exactly, so the
        reused value is bit-identical to a fresh evaluation at θ1 (in batched mode, to the same
        evaluation batched: equal to float rounding).
        """
        if self.slice_mode == "vmap":
            return self._slice_batched(theta0, theta1, alphas, chunks, first)
        losses = []
        if first is None:
            self.load(theta0)
            first = self.loss(chunks)
        losses.append(first)
        delta = theta1 - theta0
        for alpha in alphas[1:-1]:
            self.load_between(theta0, delta, alpha)
            losses.append(self.loss(chunks))
        self.load(theta1)
        losses.append(self.loss(chunks))
        return torch.stack(losses)

    def _slice_batched(
        self,
        theta0: torch.Tensor,
        theta1: torch.Tensor,
        alphas: Sequence[float],
        chunks: Chunks,
        first: torch.Tensor | None,
    ) -> torch.Tensor:
        todo = list(alphas) if first is None else list(alphas[1:])
        coeffs = torch.tensor(todo, dtype=self.flat.dtype, device=self.flat.device)
        thetas = torch.addr(theta0.expand(len(todo), -1), coeffs, theta1 - theta0)
        thetas[-1] = theta1  # the end points exactly, as in the looped slice
        if first is None:
            thetas[0] = theta0
        parts = [
            self.losses_at(group, chunks)
            for group in torch.split(thetas, self._points_per_pass(chunks))
        ]
        if first is not None:
            parts.insert(0, first.reshape(1))
        return torch.cat(parts)

    @torch.no_grad()
    def losses_at(self, thetas: torch.Tensor, chunks: Chunks) -> torch.Tensor:
        """[L_P(θ) for each row θ of ``thetas``] in one vmapped pass per probe chunk."""
        from torch.func import functional_call, vmap

        net = self._functional_model()
        n_points = thetas.shape[0]
        params, offset = {}, 0
        for name, p in self._param_shapes:
            n = p.numel()
            params[name] = thetas[:, offset : offset + n].view(n_points, *p)
            offset += n
        buffers = dict(net.named_buffers())

        def logits_at(theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(net, (theta, buffers), (x,))

        batched = vmap(logits_at, in_dims=(0, None))
        total = torch.zeros(n_points, dtype=self.flat.dtype, device=self.flat.device)
        count = 0
        for x, y in chunks:
            logits = batched(params, x)  # [points, chunk, classes]
            ce = nn.functional.cross_entropy(
                logits.flatten(0, 1), y.repeat(n_points), reduction="none"
            )
            total += ce.view(n_points, -1).sum(1)
            count += y.shape[0]
        return total / count

    def _points_per_pass(self, chunks: Chunks) -> int:
        """How many slice points one vmapped pass takes: the stacked parameters and the layer
        outputs of a chunk at every point must fit their budgets. Worked out once per chunk size
        (one forward on two examples, and on CUDA one free-memory query), not every step."""
        rows = max(x.shape[0] for x, _ in chunks)
        if rows not in self._per_pass:
            size = self.flat.element_size()
            by_params = VMAP_PARAM_BYTES // (self.numel * size)
            per_example = activations_per_example(self.shadow, chunks[0][0])
            budget = VMAP_ACTIVATION_BYTES
            if self.flat.device.type == "cuda":
                budget = max(budget, torch.cuda.mem_get_info(self.flat.device)[0] // 4)
            by_activations = budget // max(1.0, rows * per_example * size)
            self._per_pass[rows] = max(1, int(min(by_params, by_activations)))
        return self._per_pass[rows]

    def _functional_model(self) -> nn.Module:
        """A copy of the shadow for ``functional_call``: BatchNorm without running buffers.

        In probe mode BatchNorm normalises with batch statistics, which under ``vmap`` are each
        point's own; running buffers would be updated in place, which ``vmap`` refuses, and
        ``torch.func.replace_all_batch_norm_modules_`` removes them. The copy's own parameter
        values are never read.
        """
        if self._functional is None:
            from torch.func import replace_all_batch_norm_modules_

            net = copy.deepcopy(self.shadow)
            replace_all_batch_norm_modules_(net)
            set_probe_mode(net)
            self._param_shapes = [(name, p.shape) for name, p in net.named_parameters()]
            for p in net.parameters():
                p.data = p.data.new_empty(0)  # every call passes all parameters: free the copy
            self._functional = net
        return self._functional

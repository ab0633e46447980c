"""Evaluating a slice: the probe loss at the K+1 points θ_t + α_j Δ_t of one step.

Two ways, chosen by the Evaluator's ``slice_mode``:
- ``loop``: K passes of the shadow model, each after one fused ``add`` moves it to the next point.
- ``vmap``: the K parameter vectors are stacked and ``torch.func.vmap`` runs ``functional_call``
  over them, so each probe chunk is read once per step instead of K times and each layer becomes
  one batched kernel. On CUDA that beats K launches of small kernels; on a CPU it pays off for
  dense layers only (measured: an MLP's slice 1.45x faster, a small CNN's 1.5x slower, because
  vmapped convolutions run as grouped convolutions), hence ``--slice-mode``'s ``auto`` rule in
  ``sgdwalk.config``. A pass takes as many points as fit the memory budgets below.

The end points load θ0 and θ1 exactly in both, so a reused L_0 is the previous step's L_K.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sgdwalk.probe import Chunks, Evaluator, activations_per_example, set_probe_mode

VMAP_PARAM_BYTES = 1 << 30  # the stacked parameter vectors of one batched pass stay under this
VMAP_ACTIVATION_BYTES = 1 << 30  # and its layer outputs (on CUDA: a quarter of the free memory)


def slice_losses(
    ev: Evaluator,
    theta0: torch.Tensor,
    theta1: torch.Tensor,
    alphas: Sequence[float],
    chunks: Chunks,
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """[L_P(θ0 + α_j Δ) for j = 0..K] as one device vector (``first``: L_P(θ0), if known)."""
    if ev.slice_mode == "vmap":
        return _vmapped(ev, theta0, theta1, alphas, chunks, first)
    losses = []
    if first is None:
        ev.load(theta0)
        first = ev.loss(chunks)
    losses.append(first)
    delta = theta1 - theta0
    for alpha in alphas[1:-1]:
        ev.load_between(theta0, delta, alpha)
        losses.append(ev.loss(chunks))
    ev.load(theta1)
    losses.append(ev.loss(chunks))
    return torch.stack(losses)


def _vmapped(
    ev: Evaluator,
    theta0: torch.Tensor,
    theta1: torch.Tensor,
    alphas: Sequence[float],
    chunks: Chunks,
    first: torch.Tensor | None,
) -> torch.Tensor:
    batched = ev.batched if isinstance(ev.batched, BatchedLosses) else BatchedLosses(ev)
    ev.batched = batched
    todo = list(alphas) if first is None else list(alphas[1:])
    coeffs = torch.tensor(todo, dtype=ev.flat.dtype, device=ev.flat.device)
    thetas = torch.addr(theta0.expand(len(todo), -1), coeffs, theta1 - theta0)
    thetas[-1] = theta1  # the end points exactly, as in the looped slice
    if first is None:
        thetas[0] = theta0
    parts = [batched.losses_at(group, chunks)
             for group in torch.split(thetas, batched.points_per_pass(chunks))]  # fmt: skip
    if first is not None:
        parts.insert(0, first.reshape(1))
    return torch.cat(parts)


class BatchedLosses:
    """L_P at many parameter vectors in one vmapped pass per chunk, on a functional copy of the
    Evaluator's shadow (BatchNorm without running buffers: see ``_functional_copy``)."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        self.net = _functional_copy(ev.shadow)
        self.shapes = [(name, p.shape) for name, p in ev.shadow.named_parameters()]
        self._per_pass: dict[int, int] = {}  # points per pass, by probe chunk rows

    @torch.no_grad()
    def losses_at(self, thetas: torch.Tensor, chunks: Chunks) -> torch.Tensor:
        """[L_P(θ) for each row θ of ``thetas``] in one vmapped pass per probe chunk."""
        from torch.func import functional_call, vmap

        net, n_points = self.net, thetas.shape[0]
        params, offset = {}, 0
        for name, shape in self.shapes:
            n = shape.numel()
            params[name] = thetas[:, offset : offset + n].view(n_points, *shape)
            offset += n
        buffers = dict(net.named_buffers())

        def logits_at(theta: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(net, (theta, buffers), (x,))

        batched = vmap(logits_at, in_dims=(0, None))
        total = torch.zeros(n_points, dtype=thetas.dtype, device=thetas.device)
        count = 0
        for x, y in chunks:
            self.ev.checkpoint()
            logits = batched(params, x)  # [points, chunk, classes]
            ce = nn.functional.cross_entropy(
                logits.flatten(0, 1), y.repeat(n_points), reduction="none"
            )
            total += ce.view(n_points, -1).sum(1)
            count += y.shape[0]
        return total / count

    def points_per_pass(self, chunks: Chunks) -> int:
        """How many slice points one vmapped pass takes: the stacked parameters and the layer
        outputs of a chunk at every point must fit their budgets. Worked out once per chunk size
        (one forward on two examples, and on CUDA one free-memory query), not every step."""
        rows = max(x.shape[0] for x, _ in chunks)
        if rows not in self._per_pass:
            ev = self.ev
            size = ev.flat.element_size()
            by_params = VMAP_PARAM_BYTES // (ev.numel * size)
            per_example = activations_per_example(ev.shadow, *chunks[0])
            budget = VMAP_ACTIVATION_BYTES
            if ev.flat.device.type == "cuda":
                budget = max(budget, torch.cuda.mem_get_info(ev.flat.device)[0] // 4)
            by_activations = budget // max(1.0, rows * per_example * size)
            self._per_pass[rows] = max(1, int(min(by_params, by_activations)))
        return self._per_pass[rows]


def _functional_copy(shadow: nn.Module) -> nn.Module:
    """A copy of the shadow for ``functional_call``: BatchNorm without running buffers.

    In probe mode BatchNorm normalises with batch statistics, which under ``vmap`` are each point's
    own; running buffers would be updated in place, which ``vmap`` refuses, and
    ``torch.func.replace_all_batch_norm_modules_`` removes them. The copy's own parameter values
    are never read (every call passes them all), so they are freed.
    """
    from torch.func import replace_all_batch_norm_modules_

    net = copy.deepcopy(shadow)
    replace_all_batch_norm_modules_(net)
    set_probe_mode(net)
    for p in net.parameters():
        p.data = p.data.new_empty(0)
    return net

"""Gradient–Hessian alignment across batch sizes (README "Curvature": the paper's Figures 5-6).

Why separate from the operator and from Lanczos: the formulas are plain linear algebra on vectors
the caller already has (mini-batch gradients g_b, their products H g_b, the top-k eigenvectors V_k,
the full-split gradient), so they are tested against brute force on their own, and the expensive
parts (gradients, products) stay where their cost is counted.

Per draw of a mini-batch of size b (gradient g = g_b, eigenvectors v_i of unit length):
- |cos(g, v_i)| = |g·v_i| / ‖g‖                       (one per i = 1..k)
- subspace alignment = ‖V_kᵀ g‖ / ‖g‖                  (1 when g lies in span(v_1..v_k))
- Rayleigh quotient = gᵀ H g / ‖g‖²                    (the curvature along g)
- cos(g, g_full) = g·g_full / (‖g‖ ‖g_full‖)
Each is averaged over the M draws; the std is the population std (ddof 0), so M = 1 gives 0.
Batches are drawn without replacement from the training split; b = the whole split is drawn once
(every draw would be the same set), so its ``samples`` is 1.
"""

from __future__ import annotations

import torch

from sgdwalk.records import Alignment


def draw_batches(n_train: int, b: int, samples: int, gen: torch.Generator) -> list[torch.Tensor]:
    """M index sets of size b from range(n_train), each without replacement; one when b = n."""
    if b >= n_train:
        return [torch.arange(n_train)]
    return [torch.randperm(n_train, generator=gen)[:b].sort().values for _ in range(samples)]


def alignment_values(
    grads: torch.Tensor, hgrads: torch.Tensor, eigvecs: torch.Tensor, g_full: torch.Tensor
) -> torch.Tensor:
    """Per draw (rows): [|cos(g, v_1)|..|cos(g, v_k)|, subspace, Rayleigh, cos(g, g_full)].

    ``grads`` and ``hgrads`` are (M, n) with hgrads[j] = H grads[j]; ``eigvecs`` is (n, k).
    """
    norms = grads.norm(dim=1)
    proj = grads @ eigvecs  # (M, k): g·v_i
    eig_cos = proj.abs() / norms[:, None]
    subspace = proj.norm(dim=1) / norms  # ‖V_kᵀ g‖ / ‖g‖
    rayleigh = (grads * hgrads).sum(1) / norms**2  # gᵀHg / ‖g‖²
    full_cos = grads @ g_full / (norms * g_full.norm())
    return torch.cat([eig_cos, subspace[:, None], rayleigh[:, None], full_cos[:, None]], dim=1)


def summarize(batch_size: int, values: torch.Tensor) -> Alignment:
    """Mean and population std over the draws of ``alignment_values`` rows."""
    v = values.double()
    mean = v.mean(0)
    std = v.std(0, correction=0)
    m, s = mean.tolist(), std.tolist()  # sync point: once per batch size
    k = v.shape[1] - 3
    return Alignment(
        batch_size=batch_size, samples=int(v.shape[0]),
        eig_cos_mean=m[:k], eig_cos_std=s[:k],
        subspace_mean=m[k], subspace_std=s[k],
        rayleigh_mean=m[k + 1], rayleigh_std=s[k + 1],
        full_cos_mean=m[k + 2], full_cos_std=s[k + 2],
    )  # fmt: skip

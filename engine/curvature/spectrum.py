"""More of the Hessian than its top: each layer's top eigenvalue, and the spectral density.

Per layer (``layer_tops``): the top eigenvalue of each parameter block's diagonal block of H,
H_bb = P_b H P_b (P_b keeps block b's coordinates), by Lanczos on the block's own coordinates:
v_b ↦ (H [0 … v_b … 0])_b, one Hessian-vector product per step. Which layer is sharpest, and how
that moves during training, is what a global λ1 hides (PyHessian's issue #10 asks for it). A block
is a module's own parameters (a Linear's weight and bias together), named as the module is.

Spectral density (``density``): stochastic Lanczos quadrature (Golub and Meurant; Ghorbani, Krishnan
and Xiao 2019, "An investigation into neural net optimization via Hessian eigenvalue density").
For each of a few random unit vectors v, m Lanczos steps from v give the tridiagonal projection;
its Ritz values θ_i with weights (v·y_i)² are a quadrature of the measure v^T δ(t − H) v, whose
average over v estimates the density of eigenvalues (1/n) Σ δ(t − λ_j). The nodes and weights are
stored; the density figure (``sgdwalk.tui.figures.density``) smooths them with a Gaussian. Both reuse ``lanczos_steps`` (full
reorthogonalization, so the quadrature is exact for polynomials of degree < 2m).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sgdwalk.curvature.lanczos import Operator, lanczos_steps

LAYER_TOL = 1e-2  # relative residual of each layer's top pair
DENSITY_STEPS = 30  # Lanczos steps per random vector (nodes per vector)
DENSITY_VECTORS = 2  # random vectors averaged


@dataclass(frozen=True)
class Block:
    """A module's own parameters: their name and their place in the flat vector."""

    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def blocks(model: nn.Module) -> list[Block]:
    """One block per module that owns parameters, in the flat vector's order (parameters()
    order); a module's parameters are contiguous there."""
    owner = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owner[id(p)] = name or type(module).__name__
    out: list[Block] = []
    offset = 0
    for p in model.parameters():
        name = owner[id(p)]
        if out and out[-1].name == name and out[-1].stop == offset:
            out[-1] = Block(name, out[-1].start, offset + p.numel())
        else:
            out.append(Block(name, offset, offset + p.numel()))
        offset += p.numel()
    return out


def restricted(op: Operator, block: Block, n: int, like: torch.Tensor) -> Operator:
    """v_b ↦ (H [0 … v_b … 0])_b: the diagonal block H_bb as an operator on the block's own
    coordinates."""

    def apply(v: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(n, dtype=like.dtype, device=like.device)
        full[block.start : block.stop] = v
        return op(full)[block.start : block.stop]

    return apply


def layer_tops(
    op: Operator, parts: Sequence[Block], like: torch.Tensor, seed: int = 0
) -> Generator[int, None, list[float]]:
    """The top eigenvalue of each block's H_bb (yields the products made, in all)."""
    n, made, tops = like.numel(), 0, []
    for block in parts:
        steps = lanczos_steps(restricted(op, block, n, like), block.size, 1, tol=LAYER_TOL,
                              seed=seed, dtype=like.dtype, device=like.device)  # fmt: skip
        while True:
            try:
                next(steps)
                made += 1
                yield made
            except StopIteration as done:
                tops.append(float(done.value.eigenvalues[0]))
                break
    return tops


def density(
    op: Operator, like: torch.Tensor, vectors: int = DENSITY_VECTORS,
    steps: int = DENSITY_STEPS, seed: int = 0,
) -> Generator[int, None, tuple[list[float], list[float]]]:  # fmt: skip
    """Nodes and weights of the spectral density by stochastic Lanczos quadrature: ``vectors``
    random starts, ``steps`` nodes each; the weights sum to 1 (yields the products made)."""
    n = like.numel()
    m = min(steps, n)
    gen = torch.Generator().manual_seed(seed + 31)
    nodes: list[float] = []
    weights: list[float] = []
    made = 0
    for _ in range(vectors):
        v = torch.randn(n, generator=gen, dtype=torch.float64).to(like)
        v = v / v.norm()
        run = lanczos_steps(op, n, m, tol=0.0, max_matvecs=m, start=v[:, None], seed=seed,
                            dtype=like.dtype, device=like.device)  # fmt: skip
        while True:
            try:
                next(run)
                made += 1
                yield made
            except StopIteration as done:
                result = done.value
                break
        w = (v @ result.eigenvectors) ** 2  # (v·y_i)²: the quadrature weights of this start
        nodes += result.eigenvalues.tolist()
        weights += (w / w.sum() / vectors).double().cpu().tolist()
    return nodes, weights

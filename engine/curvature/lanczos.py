"""Top-k eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

Why our own and not ``scipy.sparse.linalg.eigsh`` (ARPACK): on the digits MLP both need about the
same number of products for the top 10 at 1e-3 (cold at init 91 vs 87; after an epoch ~43 vs ~47;
engine/curvature/bench.py measures both), but eigsh works on host numpy arrays (on a GPU every
product would cross the bus), cannot report progress per product, and takes one start vector, while
this one is a generator (``PhaseProgressed`` per product), stays on the device, warm-starts from
the previous eigenvectors and returns residuals and converged flags per pair. It never restarts,
so it keeps ``max_matvecs`` basis vectors in memory.

The algorithm is the band (Ruhe) form of block Lanczos, written as Arnoldi on a symmetric operator:
the basis starts with ``block`` orthonormal vectors; product j applies A to basis vector j and the
result, orthogonalised twice against the whole basis (classical Gram–Schmidt, twice is enough), is
the next basis vector. The coefficients fill the projection T = Qᵀ A Q. After p products, the
Rayleigh–Ritz pairs (θ_i, y_i) of the leading p×p block of T give λ_i ≈ θ_i and v_i = Q_p y_i, with
the exact residual ‖A v_i − θ_i v_i‖ = ‖T[p:m, :p] y_i‖ (A Q_p = Q_m T[:m, :p], Q orthonormal).
``block=1`` is ordinary Lanczos. A single start vector cannot see the second copy of a repeated
eigenvalue (the Krylov space holds one vector per eigenspace); ``block=b`` finds multiplicities up
to b. A pair has converged when ‖A v − θ v‖ ≤ tol·|θ| (ARPACK's criterion, so the two compare).
An operator that returns NaN or inf (the Hessian of a diverged model) ends the run at once with
NaN eigenvalues, so a caller can record that there is no spectrum rather than fail.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LanczosResult:
    """Top-k Ritz pairs, best first. Tensors: eigenvectors are the columns of an (n, k) matrix."""

    eigenvalues: torch.Tensor  # (k,) float64, on the CPU
    eigenvectors: torch.Tensor  # (n, k), the operator's dtype and device, unit columns
    residuals: torch.Tensor  # (k,) float64: ‖A v_i − λ_i v_i‖
    converged: torch.Tensor  # (k,) bool: residual <= tol·|λ_i|
    matvecs: int


def default_max_matvecs(n: int, k: int) -> int:
    return min(n, 4 * k + 60)


class _Basis:
    """Orthonormal rows Q[0..m) and the projection T, grown one vector at a time."""

    def __init__(self, size: int, n: int, dtype: torch.dtype, device: torch.device):
        self.q = torch.zeros(size, n, dtype=dtype, device=device)
        self.t = torch.zeros(size, size, dtype=torch.float64)
        self.m = 0
        self.n = n
        self.tiny = 100 * torch.finfo(dtype).eps

    def orthogonalize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w − Q Qᵀ w, twice (classical Gram–Schmidt twice), and the coefficients Qᵀ w."""
        q = self.q[: self.m]
        h = q @ w
        w = w - q.T @ h
        h2 = q @ w
        return w - q.T @ h2, h + h2

    def append(self, w: torch.Tensor, scale: float, gen: torch.Generator) -> float:
        """Add w/‖w‖ for w already orthogonal to Q; return the coupling ‖w‖ (0 on a restart).

        When ‖w‖ is rounding noise against ``scale`` (the norm before orthogonalising) the span is
        invariant: the basis continues from a random direction and the coupling is exactly 0.
        """
        if self.m >= min(self.n, self.q.shape[0]):
            return 0.0
        norm = float(w.norm())  # sync point: one per product, needed to normalise
        coupling = norm
        if norm <= self.tiny * max(scale, 1e-300):
            w, _ = self.orthogonalize(_random(self.n, gen, self.q))
            norm, coupling = float(w.norm()), 0.0  # sync point (restart only)
        self.q[self.m] = w / norm
        self.m += 1
        return coupling

    def add(self, v: torch.Tensor, gen: torch.Generator) -> None:
        """Orthogonalise an arbitrary vector (a start vector) and append it."""
        w, _ = self.orthogonalize(v)
        self.append(w, float(v.norm()), gen)  # sync point (start only)


def _random(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(n, generator=gen, dtype=torch.float64).to(like.dtype).to(like.device)


def _start(basis: _Basis, block: int, start: torch.Tensor | None, gen: torch.Generator) -> None:
    """Seed the basis: from the previous eigenvectors when given (warm start), else at random.

    With ``block=1`` the warm start vector is Σ_i v_i: a Krylov space grown from a combination of
    k eigenvectors is invariant after k products, so near-unchanged eigenvectors converge in ~k.
    """
    seeds = []
    if start is not None and start.numel():
        start = start.to(basis.q.dtype).to(basis.q.device).reshape(basis.n, -1)
        seeds = [start.sum(1)] if block == 1 else list(start.T[:block])
    for _ in range(block - len(seeds)):
        seeds.append(_random(basis.n, gen, basis.q))
    for s in seeds:
        basis.add(s, gen)


def _ritz(
    t: torch.Tensor, p: int, m: int, k: int, which: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k Ritz values, vectors (in the basis) and residuals from T after p products."""
    tp = t[:p, :p]
    theta, y = torch.linalg.eigh((tp + tp.T) / 2)
    key = theta.abs() if which == "LM" else theta
    order = torch.argsort(key, descending=True)[:k]
    theta, y = theta[order], y[:, order]
    resid = (t[p:m, :p] @ y).norm(dim=0)  # ‖A Q_p y − θ Q_p y‖ = ‖T[p:m, :p] y‖
    return theta, y, resid


def lanczos_steps(
    op: Operator,
    n: int,
    k: int,
    *,
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    seed: int = 0,
    start: torch.Tensor | None = None,
    block: int = 1,
    which: str = "LA",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Generator[int, None, LanczosResult]:
    """Like ``lanczos``, but yields the number of products after each one (for progress).

    Use ``result = yield from lanczos_steps(...)`` in a generator, or ``lanczos`` to just run it.
    ``which``: "LA" largest algebraic (the top of the Hessian), "LM" largest magnitude.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be 'LA' or 'LM', got {which!r}")
    budget = min(n, max_matvecs or default_max_matvecs(n, k))
    budget = max(budget, k)
    gen = torch.Generator().manual_seed(seed)
    basis = _Basis(budget + block, n, dtype, torch.device(device))
    _start(basis, block, start, gen)
    p = 0
    theta = y = resid = torch.zeros(0, dtype=torch.float64)
    while p < budget and p < basis.m:
        aq = op(basis.q[p])
        w, h = basis.orthogonalize(aq)
        h = h.double().cpu()  # sync point: the projection lives on the host, one per product
        if not bool(torch.isfinite(h).all()):  # a diverged model: no spectrum to find
            return _nonfinite(basis, k, p + 1)
        basis.t[: basis.m, p] = h  # T[i, p] = q_iᵀ A q_p
        basis.t[p, : basis.m] = h
        m_before = basis.m
        coupling = basis.append(w, float(aq.norm()), gen)  # sync point
        if basis.m > m_before:
            basis.t[m_before, p] = basis.t[p, m_before] = coupling
        p += 1
        yield p
        if p >= k:
            theta, y, resid = _ritz(basis.t, p, basis.m, k, which)
            if bool((resid <= tol * theta.abs()).all()):
                break
    vectors = basis.q[:p].T @ y.to(basis.q.dtype).to(basis.q.device)
    return LanczosResult(theta, vectors, resid, resid <= tol * theta.abs(), p)


def _nonfinite(basis: _Basis, k: int, products: int) -> LanczosResult:
    """The result when the operator gave NaN or inf: NaN pairs, none converged."""
    nan = torch.full((k,), float("nan"), dtype=torch.float64)
    vectors = torch.zeros(basis.n, k, dtype=basis.q.dtype, device=basis.q.device)
    return LanczosResult(nan, vectors, nan.clone(), torch.zeros(k, dtype=torch.bool), products)


def lanczos(op: Operator, n: int, k: int, **kwargs: object) -> LanczosResult:
    """Top-k eigenpairs of the symmetric operator ``op`` on R^n; see ``lanczos_steps``."""
    steps = lanczos_steps(op, n, k, **kwargs)  # type: ignore[arg-type]
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value

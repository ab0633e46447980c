"""Lanczos on plain symmetric matrices with known spectra, against numpy.linalg.eigvalsh."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sgdwalk.curvature.lanczos import LanczosResult, lanczos, lanczos_steps

N = 120


def _matrix(eigs: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Q diag(eigs) Qᵀ with a random orthogonal Q: a symmetric matrix with exactly this spectrum."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ q.T


def _top(a: torch.Tensor, k: int, which: str = "LA") -> np.ndarray:
    w = np.linalg.eigvalsh(a.numpy())
    key = np.abs(w) if which == "LM" else w
    return w[np.argsort(-key, kind="stable")][:k]


def _run(a: torch.Tensor, k: int, **kw) -> LanczosResult:
    kw.setdefault("tol", 1e-10)
    kw.setdefault("max_matvecs", a.shape[0])
    return lanczos(lambda v: a @ v, a.shape[0], k, dtype=torch.float64, **kw)


RNG = np.random.default_rng(7)
SPECTRA = {
    "gaussian": RNG.normal(size=N),
    "clustered": np.r_[10 + 1e-3 * np.arange(6), RNG.uniform(-1, 1, N - 6)],
    "negative": -np.abs(RNG.normal(size=N)) - 0.1,
    "outliers": np.r_[np.geomspace(50, 2, 10), RNG.normal(0, 0.05, N - 10)],
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_top_k_matches_eigvalsh(name: str) -> None:
    a = _matrix(SPECTRA[name])
    r = _run(a, 6)
    assert np.allclose(r.eigenvalues.numpy(), _top(a, 6), rtol=1e-9, atol=1e-9)
    assert bool(r.converged.all())


def test_largest_magnitude_finds_negative_end() -> None:
    a = _matrix(np.r_[-20.0, -15.0, 12.0, RNG.uniform(-1, 1, N - 3)])
    r = _run(a, 3, which="LM")
    assert np.allclose(r.eigenvalues.numpy(), [-20.0, -15.0, 12.0], rtol=1e-9)


def test_repeated_eigenvalues_with_a_block() -> None:
    """A block of b start vectors sees multiplicities up to b (one vector cannot, in theory)."""
    a = _matrix(np.r_[5.0, 5.0, 5.0, 4.0, 4.0, RNG.uniform(0, 3, N - 5)])
    r = _run(a, 5, block=3)
    assert np.allclose(r.eigenvalues.numpy(), [5, 5, 5, 4, 4], rtol=1e-9)


def test_eigenvectors_and_residuals_are_true() -> None:
    a = _matrix(SPECTRA["outliers"])
    r = _run(a, 4, tol=1e-6)
    v = r.eigenvectors
    assert torch.allclose(v.T @ v, torch.eye(4, dtype=torch.float64), atol=1e-10)
    true_resid = (a @ v - v * r.eigenvalues).norm(dim=0)
    assert torch.allclose(true_resid, r.residuals, atol=1e-9)
    assert bool((r.residuals <= 1e-6 * r.eigenvalues.abs()).all())


def test_deterministic_for_a_seed_and_counts_products() -> None:
    a = _matrix(SPECTRA["gaussian"])
    calls = []

    def op(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return a @ v

    r1 = lanczos(op, N, 3, tol=1e-6, seed=3, dtype=torch.float64)
    r2 = lanczos(lambda v: a @ v, N, 3, tol=1e-6, seed=3, dtype=torch.float64)
    assert r1.matvecs == len(calls) == r2.matvecs
    assert torch.equal(r1.eigenvalues, r2.eigenvalues)
    assert torch.equal(r1.eigenvectors, r2.eigenvectors)


def test_warm_start_from_exact_eigenvectors_is_nearly_free() -> None:
    a = _matrix(SPECTRA["outliers"])
    cold = _run(a, 5, tol=1e-8)
    warm = _run(a, 5, tol=1e-8, start=cold.eigenvectors)
    assert warm.matvecs <= 6 < cold.matvecs
    assert np.allclose(warm.eigenvalues.numpy(), cold.eigenvalues.numpy(), rtol=1e-9)


def test_whole_space_and_progress_steps() -> None:
    a = _matrix(RNG.normal(size=8))
    steps = lanczos_steps(lambda v: a @ v, 8, 8, tol=1e-12, dtype=torch.float64)
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as done:
            r = done.value
            break
    assert seen == list(range(1, r.matvecs + 1))
    assert np.allclose(r.eigenvalues.numpy(), _top(a, 8), atol=1e-10)


def test_result_is_frozen_and_bad_arguments_raise() -> None:
    a = _matrix(RNG.normal(size=10))
    r = _run(a, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.matvecs = 0  # type: ignore[misc]
    with pytest.raises(ValueError):
        _run(a, 11)
    with pytest.raises(ValueError):
        _run(a, 2, which="SA")

"""Alignment formulas against brute force, and a whole curvature pass on a tiny float64 model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.curvature.alignment import alignment_values, draw_batches, summarize
from sgdwalk.curvature.measure import CurvatureMeter, hessian_indices
from sgdwalk.probe import Evaluator, flat_params
from sgdwalk.probe_set import ProbeSet
from sgdwalk.records import CurvatureMeasured, PhaseProgressed


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _brute(g: np.ndarray, hg: np.ndarray, vs: np.ndarray, gf: np.ndarray) -> list[float]:
    """Each formula of sgdwalk.curvature.alignment written out as a loop over plain numbers."""
    norm = math.sqrt(sum(a * a for a in g))
    cos = [abs(sum(a * b for a, b in zip(g, v, strict=True))) / norm for v in vs.T]
    sub = math.sqrt(sum(c * c for c in cos))  # ‖Vᵀg‖/‖g‖ with orthonormal v_i
    ray = sum(a * b for a, b in zip(g, hg, strict=True)) / norm**2
    full = sum(a * b for a, b in zip(g, gf, strict=True)) / (
        norm * math.sqrt(sum(b * b for b in gf))
    )
    return [*cos, sub, ray, full]


def test_alignment_values_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    n, k, m = 15, 3, 4
    h = rng.normal(size=(n, n))
    h = h + h.T
    vs = np.linalg.qr(rng.normal(size=(n, k)))[0]
    grads, gf = rng.normal(size=(m, n)), rng.normal(size=n)
    hgrads = grads @ h
    got = alignment_values(*(torch.from_numpy(a) for a in (grads, hgrads, vs, gf)))
    ref = np.array([_brute(g, hg, vs, gf) for g, hg in zip(grads, hgrads, strict=True)])
    assert np.allclose(got.numpy(), ref, rtol=1e-12)
    a = summarize(100, got)
    assert a.batch_size == 100 and a.samples == m
    assert np.allclose(a.eig_cos_mean, ref[:, :k].mean(0)) and np.allclose(
        a.eig_cos_std, ref[:, :k].std(0)
    )
    assert np.isclose(a.subspace_mean, ref[:, k].mean()) and np.isclose(
        a.subspace_std, ref[:, k].std()
    )
    assert np.isclose(a.rayleigh_mean, ref[:, k + 1].mean()) and np.isclose(
        a.rayleigh_std, ref[:, k + 1].std()
    )
    assert np.isclose(a.full_cos_mean, ref[:, k + 2].mean()) and np.isclose(
        a.full_cos_std, ref[:, k + 2].std()
    )


def test_gradient_in_the_top_subspace_is_fully_aligned() -> None:
    v = torch.eye(6, dtype=torch.float64)[:, :2]
    g = torch.tensor([[3.0, 4.0, 0, 0, 0, 0]], dtype=torch.float64)
    row = alignment_values(g, 2 * g, v, g[0]).tolist()[0]
    assert np.allclose(row, [0.6, 0.8, 1.0, 2.0, 1.0])


def test_draw_batches() -> None:
    g = torch.Generator().manual_seed(0)
    draws = draw_batches(50, 10, 4, g)
    assert len(draws) == 4 and all(len(d) == len(set(d.tolist())) == 10 for d in draws)
    assert all(int(d.min()) >= 0 and int(d.max()) < 50 for d in draws)
    full = draw_batches(50, 50, 4, g)
    assert len(full) == 1 and full[0].tolist() == list(range(50))


def test_hessian_indices_subset_of_probe() -> None:
    probe = torch.tensor([1, 4, 6, 9, 12, 20])
    assert torch.equal(hessian_indices(probe, 30, None, 0), probe)
    sub = hessian_indices(probe, 30, 3, 0)
    assert len(sub) == 3 and set(sub.tolist()) <= set(probe.tolist())
    assert torch.equal(sub, hessian_indices(probe, 30, 3, 0))
    assert len(set(hessian_indices(probe, 30, 10, 0).tolist())) == 10


def test_meter_pass_matches_brute_force() -> None:
    """A whole pass on a tiny float64 MLP (no BN: a batch gradient is then order-free)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(20, 3, generator=g, dtype=torch.float64),
        torch.randint(0, 2, (20,), generator=g),
    )
    ev = Evaluator(model)
    probe = ProbeSet(lambda i: (x[i], y[i]), 20, torch.arange(20), 8)
    meter = CurvatureMeter(ev, probe, k=2, sizes=[5, 20], samples=3, tol=1e-10)
    theta = flat_params(model)
    recs = list(meter.run_pass(theta, 0, 0))
    assert all(isinstance(r, PhaseProgressed) and r.phase == "curvature" for r in recs[:-1])
    assert [r.done for r in recs[:-1]] == sorted(r.done for r in recs[:-1])
    rec = recs[-1]
    assert isinstance(rec, CurvatureMeasured) and rec.hvps == recs[-2].done == recs[-2].total

    params = list(model.parameters())

    def grad_of(i: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])

    gf = grad_of(torch.arange(20))
    loss = nn.functional.cross_entropy(model(x), y)
    gp = torch.autograd.grad(loss, params, create_graph=True)
    gp = torch.cat([t.reshape(-1) for t in gp])
    h = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(gi, params, retain_graph=True)])
                     for gi in gp])  # fmt: skip
    w, u = torch.linalg.eigh(h)
    assert np.allclose(rec.eigenvalues, w.flip(0)[:2].tolist(), rtol=1e-8)
    assert [a.batch_size for a in rec.alignment] == [5, 20] and rec.alignment[1].samples == 1
    gen = torch.Generator().manual_seed(0)  # the meter's draws: seed 0, step 0
    draws = draw_batches(20, 5, 3, gen)
    grads = torch.stack([grad_of(i) for i in draws])
    ref = np.array(
        [_brute(gb.numpy(), (h @ gb).numpy(), u.flip(1)[:, :2].numpy(), gf.numpy()) for gb in grads]
    )
    a = rec.alignment[0]
    assert np.allclose(a.eig_cos_mean, ref[:, :2].mean(0), rtol=1e-6)
    assert np.isclose(a.subspace_mean, ref[:, 2].mean(), rtol=1e-6)
    assert np.isclose(a.rayleigh_mean, ref[:, 3].mean(), rtol=1e-8)
    assert np.isclose(a.full_cos_std, ref[:, 4].std(), rtol=1e-6, atol=1e-12)
    assert np.isclose(rec.alignment[1].full_cos_mean, 1.0)
    warm = list(meter.run_pass(theta, 0, 0))[-1]
    assert warm.hvps < rec.hvps  # same θ: the warm start converges almost at once

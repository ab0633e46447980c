"""The Hessian-vector operator against the exact Hessian of a tiny float64 model.

Reference: ``torch.autograd.functional.hessian`` of L_P(θ) written independently with
``torch.func.functional_call`` (BatchNorm with batch statistics over the same chunks), then
``torch.linalg.eigh``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sgdwalk.batches import make_chunks
from sgdwalk.curvature.hvp import METHODS, flat_gradient, graph_bytes, hessian_operator
from sgdwalk.curvature.lanczos import lanczos
from sgdwalk.probe import Evaluator, flat_params, set_probe_mode


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    yield
    torch.set_num_threads(before)


def tiny(seed: int = 0, bn: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)]
    return nn.Sequential(*(m for m in layers if bn or not isinstance(m, nn.BatchNorm1d))).double()


def data(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=g
    )


def exact_hessian(model: nn.Module, chunks) -> torch.Tensor:
    ref = copy.deepcopy(model)
    set_probe_mode(ref)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.track_running_stats = False
    names = [n for n, _ in ref.named_parameters()]
    shapes = [p.shape for p in ref.parameters()]
    n = sum(int(y.shape[0]) for _, y in chunks)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {k: p.view(s) for k, p, s in zip(names, parts, shapes, strict=True)}
        total = sum(nn.functional.cross_entropy(functional_call(ref, params, (x,)), y, reduction="sum")
                    for x, y in chunks)  # fmt: skip
        return total / n

    return torch.autograd.functional.hessian(loss, flat_params(model))


def dense(op, dim: int) -> torch.Tensor:
    return torch.stack([op(e) for e in torch.eye(dim, dtype=torch.float64)], dim=1)


@pytest.mark.parametrize(
    ("method", "cache"), [(m, False) for m in METHODS] + [("double_backward", True)]
)
def test_products_match_exact_hessian(method: str, cache: bool) -> None:
    model = tiny()
    x, y = data()
    chunks = make_chunks(x, y, 4)
    ev = Evaluator(model)
    h = exact_hessian(model, chunks)
    with hessian_operator(ev, chunks, method, cache) as op:
        assert op.cached == cache
        got = dense(op, ev.numel)
        assert op.products == ev.numel
        assert torch.allclose(
            op.many(torch.eye(ev.numel, dtype=torch.float64)[:5]), got[:, :5].T, atol=1e-12
        )
    assert torch.allclose(got, h, atol=1e-10, rtol=1e-8)


def test_gradient_matches_autograd() -> None:
    model = tiny(bn=False)
    x, y = data()
    ev = Evaluator(model)
    with hessian_operator(ev, make_chunks(x, y, 5), cache=True):
        plain = flat_gradient(ev, make_chunks(x, y, 5))
    loss = nn.functional.cross_entropy(model(x), y)
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    assert torch.allclose(plain, ref, atol=1e-12)


def test_top_k_matches_eigh_of_exact_hessian() -> None:
    model = tiny(seed=3)
    x, y = data(16)
    chunks = make_chunks(x, y, 8)
    ev = Evaluator(model)
    w, u = torch.linalg.eigh(exact_hessian(model, chunks))
    w, u = w.flip(0)[:4], u.flip(1)[:, :4]
    with hessian_operator(ev, chunks) as op:
        r = lanczos(op, ev.numel, 4, tol=1e-10, max_matvecs=ev.numel, dtype=torch.float64)
    assert torch.allclose(r.eigenvalues, w, rtol=1e-6, atol=0)
    cos = (r.eigenvectors * u).sum(0).abs()  # equal up to sign
    assert torch.allclose(cos, torch.ones(4, dtype=torch.float64), atol=1e-6)


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]


@pytest.mark.parametrize("method", METHODS)
def test_operator_leaves_model_and_shadow_unchanged(method: str) -> None:
    model = tiny()
    model.train()
    x, y = data()
    ev = Evaluator(model)
    before, shadow_before = _state(model), _state(ev.shadow)
    modes = [m.training for m in (*model.modules(), *ev.shadow.modules())]
    rng = torch.get_rng_state()
    with hessian_operator(ev, make_chunks(x, y, 4), method) as op:
        op(torch.ones(ev.numel, dtype=torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(before, _state(model), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(shadow_before, _state(ev.shadow), strict=True))
    assert modes == [m.training for m in (*model.modules(), *ev.shadow.modules())]
    assert torch.equal(rng, torch.get_rng_state())
    assert not any(p.requires_grad or p.grad is not None for p in ev.params)
    assert all(p.grad is None for p in model.parameters())
    assert all(m.track_running_stats for m in ev.shadow.modules() if isinstance(m, nn.BatchNorm1d))


def test_cache_follows_the_memory_budget() -> None:
    model = tiny()
    x, y = data()
    chunks = make_chunks(x, y, 4)
    ev = Evaluator(model)
    with hessian_operator(ev, chunks) as op:
        assert op.cached
        assert 0 < graph_bytes(ev, chunks) < 2**20
    with hessian_operator(ev, chunks, cache_budget=0) as op:
        assert not op.cached
    with pytest.raises(ValueError), hessian_operator(ev, chunks, method="nope"):
        pass

"""The step split by the top-k Hessian eigenvectors (``--decompose``): the dominant fraction and
the losses of both parts against a float64 brute force, and which pass's eigenvectors were used."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import sgdwalk
from sgdwalk.batches import make_chunks
from sgdwalk.meter import StepMeter
from sgdwalk.probe import Evaluator
from sgdwalk.session import open_session
from sgdwalk.slicing import Slicer

TOL = 1e-10  # float64 against float64


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    return model, x, y


def loss_at(model, theta, x, y):
    m = copy.deepcopy(model)
    vector_to_parameters(theta, m.parameters())
    return nn.functional.cross_entropy(m(x), y).item()


def test_fraction_and_both_parts_match_a_brute_force():
    model, x, y = tiny()
    n = sum(p.numel() for p in model.parameters())
    basis, _ = torch.linalg.qr(torch.randn(n, 3, generator=torch.Generator().manual_seed(2),
                                           dtype=torch.float64))  # fmt: skip
    meter = StepMeter(model, Slicer(Evaluator(model), "loop"), make_chunks(x, y, 16), points=4,
                      basis=lambda: (basis, 7))  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for step in (1, 2):
        theta = parameters_to_vector(model.parameters()).detach().clone()
        loss = nn.functional.cross_entropy(model(x[:8]), y[:8])
        opt.zero_grad()
        loss.backward()
        meter.before_update(model, step)
        opt.step()
        rec = meter.after_update(model, step, 1, 0.3, 8, loss)
        delta = parameters_to_vector(model.parameters()).detach() - theta
        dom = basis @ (basis.T @ delta)
        assert rec.basis_step == 7
        assert rec.dominant_fraction == pytest.approx((dom @ dom / (delta @ delta)).item(), abs=TOL)
        assert rec.dominant_loss == pytest.approx(loss_at(model, theta + dom, x, y), abs=TOL)
        assert rec.bulk_loss == pytest.approx(loss_at(model, theta + delta - dom, x, y), abs=TOL)
        assert rec.slice[-1] == pytest.approx(loss_at(model, theta + delta, x, y), abs=TOL)


def test_a_walker_uses_the_latest_pass_and_records_nothing_before_one(tmp_path):
    model, x, y = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    with sgdwalk.Walker(model, (x, y), session="d", sessions_dir=tmp_path, hessian_every=3,
                        top_k=2, decompose=True, budget=None) as walker:  # fmt: skip
        walker.attach(opt)
        for i in range(7):
            nn.functional.cross_entropy(model(x[i : i + 8]), y[i : i + 8]).backward()
            opt.step()
            opt.zero_grad()
    with open_session(tmp_path / "d") as s:
        steps = list(s.steps())
    # a pass at θ_0 and after steps 3 and 6: step t uses the pass before it
    assert [r.basis_step for r in steps] == [0, 0, 0, 3, 3, 3, 6]
    assert all(0.0 <= r.dominant_fraction <= 1.0 for r in steps)


def test_decompose_needs_curvature_passes(tmp_path):
    from canned import run_cli

    code, _, err = run_cli("run", "--headless", "--decompose", "--hessian-every", "off",
                           "--sessions-dir", str(tmp_path))  # fmt: skip
    assert code == 2 and "--decompose" in err and "--hessian-every" in err


def test_batch_sharpness_matches_an_explicit_batch_hessian():
    """g_Bᵀ H_B g_B / ‖g_B‖² with H_B the batch loss's Hessian, built explicitly in float64."""
    from torch.func import functional_call

    model, x, y = tiny()
    xb, yb = x[:12], y[:12]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def batch_loss(flat):
        parts, i = [], 0
        for shape in shapes:
            parts.append(flat[i : i + shape.numel()].reshape(shape))
            i += shape.numel()
        return nn.functional.cross_entropy(
            functional_call(model, dict(zip(names, parts, strict=True)), (xb,)), yb
        )

    meter = StepMeter(model, Slicer(Evaluator(model), "loop"), make_chunks(x, y, 16), points=4,
                      batch_sharpness=True)  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    theta = parameters_to_vector(model.parameters()).detach().clone()
    loss = nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad()
    loss.backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    meter.before_update(model, 1, make_chunks(xb, yb, 5))
    opt.step()
    rec = meter.after_update(model, 1, 1, 0.3, 12, loss)
    hessian = torch.autograd.functional.hessian(batch_loss, theta)
    assert rec.batch_sharpness == pytest.approx((g @ hessian @ g / (g @ g)).item(), abs=TOL)


def test_run_batch_sharpness_is_recorded_on_measured_steps(tmp_path):
    from canned import run_cli

    code, _, err = run_cli("run", "--headless", "--epochs", "1", "--train-size", "200",
                           "--batch-sharpness", "--measure-every", "2", "--hessian-every", "off",
                           "--sessions-dir", str(tmp_path), "--session", "b")  # fmt: skip
    assert code == 0, err
    with open_session(tmp_path / "b") as s:
        steps = list(s.steps())
    assert all((r.batch_sharpness is not None) == r.measured for r in steps)
    assert any(r.batch_sharpness is None for r in steps) and all(
        r.batch_sharpness > 0 for r in steps if r.batch_sharpness is not None
    )

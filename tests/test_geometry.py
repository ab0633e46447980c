"""The optimizer's edge of stability (sgdwalk.geometry), tested against the real torch optimizers
on quadratics f(x) = ½ xᵀAx in float64: just below the predicted edge the iterates shrink, just
above they grow. Adaptive optimizers run with their second-moment state held fixed (restored after
every step), which is the frozen preconditioner the analysis assumes; everything else is torch's
own update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdwalk.geometry import Unknown, geometry

A = torch.tensor([3.0, 1.0, 0.5, 0.1], dtype=torch.float64)  # the quadratic's curvatures


def edge_ratio(g, extra_l2: float = 0.0) -> float:
    """λmax(scale·(A + L2)·scale), dense: A is diagonal."""
    l2 = g.l2 if g.l2 is not None else torch.zeros_like(A)
    return float(torch.max(g.scale**2 * (A + l2)))


def run(opt_of, steps: int = 3000, hold=None) -> tuple[float, object]:
    """Iterate the optimizer on f; ``hold(state, grad)`` runs before every step (after one step
    with a zero gradient that makes the optimizer's state) to fix its second moments."""
    x = nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = opt_of([x])
    if hold is not None:
        x.grad = torch.zeros_like(x)
        opt.step()  # creates the state; a zero gradient moves nothing
        if "step" in opt.state[x] and hasattr(opt, "defaults") and "betas" in opt.defaults:
            opt.state[x]["step"].fill_(1000)  # Adam long after its start: m̂ = m
        opt.register_step_pre_hook(lambda o, *_: hold(o.state[x], x.grad))
    g = None
    for t in range(steps):
        opt.zero_grad()
        (0.5 * (A * x * x).sum()).backward()
        opt.step()
        if t == 5:
            g = geometry(opt, [x])
        size = float(x.detach().norm())
        if not math.isfinite(size) or size > 1e6:
            return math.inf, g
    return float(x.detach().norm()), g


SGD_CASES = {
    "plain": (dict(), 2.0),
    "heavy ball": (dict(momentum=0.9), 2 + 2 * 0.9),
    "dampened": (dict(momentum=0.5, dampening=0.3), (2 + 2 * 0.5) / 0.7),
    "nesterov": (dict(momentum=0.9, nesterov=True), (2 + 1.8) / (1 + 1.8)),
}


@pytest.mark.parametrize("name", list(SGD_CASES))
def test_sgd_forms_are_stable_below_the_edge_and_not_above(name):
    kw, c = SGD_CASES[name]
    edge_lr = c / float(A.max())
    below, g = run(lambda p: torch.optim.SGD(p, lr=0.97 * edge_lr, **kw))
    above, _ = run(lambda p: torch.optim.SGD(p, lr=1.03 * edge_lr, **kw))
    assert below < 1.0 and above == math.inf
    assert edge_ratio(g) == pytest.approx(0.97, rel=1e-9)
    assert g.threshold == pytest.approx(c / (0.97 * edge_lr))


def test_l2_weight_decay_adds_to_the_curvature_and_decoupled_does_not():
    _, g = run(lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.5), steps=10)
    assert edge_ratio(g) == pytest.approx(0.1 * (3.0 + 0.5) / 2)
    _, g = run(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5), steps=10)
    assert g.l2 is None
    _, g = run(lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.5), steps=10)
    assert g.l2 is not None and float(g.l2[0]) == 0.5


V = torch.tensor([4.0, 1.0, 0.25, 0.01], dtype=torch.float64)  # held second moments


def _adam_hold(beta1: float, beta2: float):
    def hold(state, grad):  # after the step's own update, v̂ = V and m̂ = m: frozen
        t = float(state["step"]) + 1
        state["exp_avg_sq"].copy_((V * (1 - beta2**t) - (1 - beta2) * grad**2) / beta2)

    return hold


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_adam_is_stable_below_its_edge_and_not_above(kind):
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    c = (2 + 2 * beta1) / (1 - beta1)
    edge_lr = c / float(torch.max(A / (V.sqrt() + eps)))
    cls = getattr(torch.optim, kind)
    hold = _adam_hold(beta1, beta2)

    def adam(p, f):  # no weight decay: AdamW's would shrink θ by (1 − η·wd) a step besides
        return cls(p, lr=f * edge_lr, betas=(beta1, beta2), eps=eps, weight_decay=0.0)

    below, g = run(lambda p: adam(p, 0.95), 4000, hold)
    above, _ = run(lambda p: adam(p, 1.05), 4000, hold)
    assert below < 1.0 and above == math.inf
    t = 1006  # read 6 steps past step 1000: D has Adam's 1/(1 − β1^t), ≈ 1 by now
    assert edge_ratio(g) == pytest.approx(0.95 / (1 - beta1**t), rel=1e-6)


def test_rmsprop_with_momentum_is_stable_below_its_edge_and_not_above():
    mu, eps, alpha = 0.5, 1e-8, 0.99
    c = 2 + 2 * mu
    edge_lr = c / float(torch.max(A / (V.sqrt() + eps)))

    def hold(state, grad):
        state["square_avg"].copy_((V - (1 - alpha) * grad**2) / alpha)

    def rms(p, f):
        return torch.optim.RMSprop(p, lr=f * edge_lr, momentum=mu, eps=eps, alpha=alpha)

    below, g = run(lambda p: rms(p, 0.97), hold=hold)
    above, _ = run(lambda p: rms(p, 1.03), hold=hold)
    assert below < 1.0 and above == math.inf
    assert edge_ratio(g) == pytest.approx(0.97, rel=1e-6)


def test_adagrad_is_stable_below_its_edge_and_not_above():
    eps = 1e-10
    edge_lr = 2 / float(torch.max(A / (V.sqrt() + eps)))

    def hold(state, grad):
        state["sum"].copy_(V - grad**2)

    below, g = run(lambda p: torch.optim.Adagrad(p, lr=0.97 * edge_lr, eps=eps), hold=hold)
    above, _ = run(lambda p: torch.optim.Adagrad(p, lr=1.03 * edge_lr, eps=eps), hold=hold)
    assert below < 1.0 and above == math.inf
    assert edge_ratio(g) == pytest.approx(0.97, rel=1e-6)


def test_two_parameter_groups_scale_each_by_its_own_lr():
    a, b = nn.Parameter(torch.ones(2, dtype=torch.float64)), nn.Parameter(torch.ones(3,
                                                                                 dtype=torch.float64))  # fmt: skip
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.4,
                                                          "momentum": 0.5}])  # fmt: skip
    g = geometry(opt, [a, b])
    assert torch.allclose(g.scale**2, torch.tensor([0.05, 0.05, 0.4 / 3, 0.4 / 3, 0.4 / 3],
                                                   dtype=torch.float64))  # fmt: skip
    assert g.threshold == pytest.approx(2 / 0.1) and not g.plain


def test_an_unknown_or_maximizing_optimizer_gets_no_line():
    x = nn.Parameter(torch.ones(2))
    with pytest.raises(Unknown, match="LBFGS"):
        geometry(torch.optim.LBFGS([x]), [x])
    with pytest.raises(Unknown, match="maximize"):
        geometry(torch.optim.SGD([x], lr=0.1, maximize=True), [x])


# ---------------------------------------------------------------- on a network's Hessian


def _edge(opt_of, steps: int = 5):
    """A tiny float64 MLP after a few optimizer steps: the edge from the curvature code, and the
    dense reference λmax(D^½ (H + L2) D^½) / c."""
    from test_curvature_hvp import data, exact_hessian, tiny

    from sgdwalk.batches import make_chunks
    from sgdwalk.curvature.edge import edge_of
    from sgdwalk.curvature.hvp import hessian_operator
    from sgdwalk.curvature.lanczos import lanczos
    from sgdwalk.probe import Evaluator, flat_params

    model = tiny(bn=False)
    x, y = data()
    opt = opt_of(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    chunks = make_chunks(x, y, 5)
    g = geometry(opt, list(model.parameters()))
    h = exact_hessian(model, chunks)
    l2 = torch.zeros(h.shape[0], dtype=h.dtype) if g.l2 is None else g.l2
    dense = torch.linalg.eigvalsh(g.scale[:, None] * (h + torch.diag(l2)) * g.scale[None, :])
    ev = Evaluator(model)
    ev.load(flat_params(model))
    with hessian_operator(ev, chunks) as op:
        lambda1 = float(lanczos(op, ev.numel, 1, tol=1e-10, dtype=torch.float64).eigenvalues[0])
        steps_ = edge_of(op, g, lambda1)
        while True:
            try:
                next(steps_)
            except StopIteration as done:
                return done.value, float(dense.max()), g


@pytest.mark.parametrize("opt_of", [
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.01),
    lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
    lambda p: torch.optim.SGD([{"params": list(p)[:2], "lr": 0.1},
                               {"params": [], "lr": 0.3}], momentum=0.9),
], ids=["adam", "adamw", "rmsprop", "sgd-groups"])  # fmt: skip
def test_the_edge_ratio_is_the_top_of_the_scaled_hessian(opt_of):
    edge, dense, _ = _edge(opt_of)
    assert edge.products > 0
    assert edge.edge_ratio == pytest.approx(dense, rel=1e-2)  # EDGE_TOL residual: ~1e-4 in λ


def test_plain_sgd_reads_the_edge_off_lambda1_with_no_extra_product():
    edge, dense, g = _edge(lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.5, weight_decay=0.01))
    assert edge.products == 0 and g.plain
    assert edge.edge_ratio == pytest.approx(dense, rel=1e-8)
    assert edge.threshold == pytest.approx(3.0 / 0.2) and edge.sharpness == pytest.approx(
        dense * 3.0 / 0.2
    )

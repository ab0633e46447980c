"""Sharpness at every step (sgdwalk.edge_tracker) against full curvature passes, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sgdwalk


def _walk(tmp_path, opt_of, name: str, every: str):
    torch.manual_seed(0)
    x, y = torch.randn(96, 6, dtype=torch.float64), torch.randint(0, 3, (96,))
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    opt = opt_of(model.parameters())
    w = sgdwalk.Walker(model, (x, y), sessions_dir=tmp_path, session=name, budget=None,
                       hessian_every=every, track_sharpness=True, top_k=2)  # fmt: skip
    w.attach(opt)
    for _ in range(3):
        for i in range(0, 96, 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()
    w.close()
    with sgdwalk.open_session(tmp_path / name) as s:
        return {r.step: r.edge_ratio for r in s.steps()}, {c.step: c for c in s.curvature()}


@pytest.mark.parametrize("opt_of", [
    lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.1),
    lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-3),
], ids=["sgd-momentum-l2", "adamw", "adam-l2"])  # fmt: skip
def test_the_tracked_edge_ratio_follows_full_passes_step_by_step(tmp_path, opt_of):
    """A pass at every step: the value tracked at step t (one product on from the pass at t−1)
    against the pass at t, at the same θ. It never exceeds the pass's λmax (a Rayleigh
    quotient), and stays within a few percent of it."""
    tracked, passes = _walk(tmp_path, opt_of, "t", "1s")
    steps = [t for t in tracked if tracked[t] is not None and passes[t].edge_ratio is not None]
    assert len(steps) >= 8  # (Adam's first step has no second moment yet: no edge)
    for t in steps:
        truth = passes[t].edge_ratio
        assert tracked[t] <= truth * (1 + 1e-6)
        if t >= 3:  # (Adam's preconditioner changes fast over its first steps: a lag there)
            assert tracked[t] == pytest.approx(truth, rel=0.05)


def test_between_passes_every_measured_step_has_the_edge_ratio(tmp_path):
    tracked, passes = _walk(tmp_path, lambda p: torch.optim.SGD(p, lr=0.05), "few", "4s")
    assert sorted(passes) == [0, 4, 8]
    assert all(tracked[t] is not None for t in range(1, 10))
    for t in (4, 8):  # where a pass also measured: they agree
        assert tracked[t] == pytest.approx(passes[t].edge_ratio, rel=0.05)


def test_no_tracking_before_the_first_pass_or_without_passes(tmp_path):
    tracked, passes = _walk(tmp_path, lambda p: torch.optim.SGD(p, lr=0.05), "off", "off")
    assert passes == {} and all(v is None for v in tracked.values())

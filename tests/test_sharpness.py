"""Sharpness against the stability threshold, on a quadratic whose λ1 is known exactly: the
recorded λ1, the (2 + 2β)/η line, weight decay, the one "edge" event, the figure and ls."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import sgdwalk
from sgdwalk.records import EDGE_EVENT
from sgdwalk.session import open_session
from sgdwalk.sharpness import edge_ratio, threshold
from sgdwalk.tui.figures import FIGURES
from sgdwalk.tui.figures.base import FigureData


def quadratic(n: int = 64, d: int = 5):
    """L(w) = ½ mean((x·w)²): Hessian XᵀX/n everywhere, λ1 its largest eigenvalue."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d).double()
    lam1 = torch.linalg.eigvalsh(x.T @ x / n).max().item()
    return x, lam1


def half_square(model, batch):
    return 0.5 * (model(batch[0]).squeeze(-1) ** 2).mean()


def run(tmp_path, name: str, lr: float, momentum: float = 0.0, wd: float = 0.0):
    x, lam1 = quadratic()
    torch.manual_seed(0)
    model = nn.Linear(5, 1, bias=False).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=wd)  # fmt: skip
    with sgdwalk.Walker(model, (x, torch.zeros(len(x))), half_square, session=name,
                        sessions_dir=tmp_path, hessian_every=1, top_k=2, budget=None) as walker:  # fmt: skip
        walker.attach(opt)
        for _ in range(2):
            opt.zero_grad()
            half_square(model, (x,)).backward()
            opt.step()
    with open_session(tmp_path / name) as s:
        return lam1, list(s.curvature()), [e for e in s.events() if e.kind == EDGE_EVENT], s


def test_lambda1_of_a_quadratic_and_the_edge_event_once(tmp_path):
    x, lam1 = quadratic()
    lam, passes, edges, _ = run(tmp_path, "past", lr=2.2 / lam1)  # 2/η = 0.91 λ1: past the edge
    assert [c.step for c in passes] == [0, 1, 2]
    for c in passes:
        assert c.eigenvalues[0] == pytest.approx(lam1, rel=1e-6)
    assert len(edges) == 1 and edges[0].step == 0  # said once, at the first pass past it
    assert f"{2 / (2.2 / lam1):.4g}" in edges[0].message
    _, _, edges, _ = run(tmp_path, "below", lr=1.5 / lam1)  # 2/η = 1.33 λ1: stable
    assert edges == []


def test_momentum_raises_the_line_and_weight_decay_adds_to_lambda1(tmp_path):
    _, lam1 = quadratic()
    # 2/η = 0.8 λ1 would be past the edge; with β = 0.5 the line is 3/η = 1.2 λ1: stable
    _, _, edges, _ = run(tmp_path, "heavy", lr=2.5 / lam1, momentum=0.5)
    assert edges == []
    # 2/η = 1.25 λ1 is stable for the loss, but the objective's curvature is λ1 + wd = 1.5 λ1
    _, _, edges, _ = run(tmp_path, "decay", lr=1.6 / lam1, wd=0.5 * lam1)
    assert len(edges) == 1


def test_the_figure_rows_ls_and_the_formulas(tmp_path):
    assert threshold(0.1) == pytest.approx(20.0) and threshold(0.1, 0.9) == pytest.approx(38.0)
    assert edge_ratio(10.0, 0.1) == pytest.approx(0.5)
    assert edge_ratio(10.0, 0.1, 0.9, 9.0) == pytest.approx(0.5)
    _, lam1 = quadratic()
    lr = 2.5 / lam1
    run(tmp_path, "heavy", lr=lr, momentum=0.5)
    with open_session(tmp_path / "heavy") as s:
        data = FigureData(s.name, None, s.config, list(s.steps()), [], list(s.curvature()))
    rows = FIGURES["sharpness"].rows(data)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["threshold"] == pytest.approx(3.0 / lr)
        assert r["edge_ratio"] == pytest.approx(lam1 * lr / 3.0, rel=1e-6)
    from canned import run_cli

    code, out, _ = run_cli("ls", "--json", "--sessions-dir", str(tmp_path))
    assert code == 0
    (row,) = json.loads(out)
    assert row["edge_ratio"] == pytest.approx(lam1 * lr / 3.0, rel=1e-6)
    code, _, err = run_cli("export", "heavy", "--sessions-dir", str(tmp_path), "--figure",
                           "sharpness", "--format", "png", "-o", str(tmp_path / "s.png"))  # fmt: skip
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 1000, err

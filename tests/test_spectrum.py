"""Each layer's top eigenvalue and the spectral density (sgdwalk.curvature.spectrum), against the
dense Hessian of a tiny float64 network."""

from __future__ import annotations

import pytest
import torch
from test_curvature_hvp import data, exact_hessian, tiny

from sgdwalk.batches import make_chunks
from sgdwalk.curvature.hvp import hessian_operator
from sgdwalk.curvature.spectrum import blocks, density, layer_tops
from sgdwalk.probe import Evaluator, flat_params
from sgdwalk.tui.figures.density import smooth


def _run(gen):
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


@pytest.fixture
def net():
    model = tiny(bn=True)
    x, y = data()
    chunks = make_chunks(x, y, 6)
    ev = Evaluator(model)
    ev.load(flat_params(model))
    return model, chunks, ev, exact_hessian(model, chunks)


def test_blocks_are_the_modules_own_parameters(net):
    model, *_ = net
    got = [(b.name, b.size) for b in blocks(model)]
    assert got == [("0", 4 * 6 + 6), ("1", 6 + 6), ("3", 6 * 3 + 3)]


def test_each_layers_top_is_the_top_of_its_diagonal_block(net):
    model, chunks, ev, h = net
    parts = blocks(model)
    with hessian_operator(ev, chunks) as op:
        tops = _run(layer_tops(op, parts, ev.flat))
    for b, top in zip(parts, tops, strict=True):
        dense = torch.linalg.eigvalsh(h[b.start : b.stop, b.start : b.stop]).max().item()
        assert top == pytest.approx(dense, rel=1e-3)


def test_the_quadrature_is_exact_for_low_moments(net):
    """One start vector v: Σ w_i θ_i^j = vᵀ H^j v for j < 2m (Lanczos quadrature is exact)."""
    model, chunks, ev, h = net
    steps = 8
    with hessian_operator(ev, chunks) as op:
        nodes, weights = _run(density(op, ev.flat, vectors=1, steps=steps, seed=4))
    assert sum(weights) == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(4 + 31)  # density()'s start vector
    v = torch.randn(h.shape[0], generator=gen, dtype=torch.float64)
    v = v / v.norm()
    for j in range(0, 2 * steps - 1):
        exact = float(v @ torch.linalg.matrix_power(h, j) @ v)
        got = sum(w * t**j for t, w in zip(nodes, weights, strict=True))
        assert got == pytest.approx(exact, rel=1e-6, abs=1e-9)


def test_a_smoothed_density_integrates_to_one():
    nodes, weights = [0.0, 1.0, 5.0], [0.5, 0.3, 0.2]
    grid = [i * 0.01 - 2 for i in range(900)]
    total = sum(smooth(nodes, weights, grid, 0.1)) * 0.01
    assert total == pytest.approx(1.0, rel=1e-3)

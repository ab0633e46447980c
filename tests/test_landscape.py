"""Barrier and valley-floor logic on arbitrary curves (property tests) and on known ones."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgdwalk.landscape import BARRIER_RTOL, analyze_slice, interpolation_alphas

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
curves = st.lists(finite, min_size=3, max_size=40)


@given(curves)
def test_floor_is_the_minimum_and_its_alpha(losses):
    alphas = interpolation_alphas(len(losses) - 1)
    s = analyze_slice(losses, alphas)
    assert s.floor_loss == min(losses)
    assert losses[alphas.index(s.floor_alpha)] == s.floor_loss
    assert s.height_above_floor == losses[0] - min(losses)
    assert s.height_above_floor >= 0


@given(curves)
def test_barrier_height_is_raw_interior_max_over_endpoints(losses):
    s = analyze_slice(losses, interpolation_alphas(len(losses) - 1))
    assert s.barrier_height == max(losses[1:-1]) - max(losses[0], losses[-1])
    tol = BARRIER_RTOL * max(abs(losses[0]), abs(losses[-1]), 1e-12)
    assert s.barrier == (s.barrier_height > tol)
    if s.barrier:
        assert s.barrier_height > 0


@given(curves)
def test_interior_minimum_means_floor_is_inside(losses):
    alphas = interpolation_alphas(len(losses) - 1)
    s = analyze_slice(losses, alphas)
    if s.interior_min:
        assert 0.0 < s.floor_alpha < 1.0


@given(st.lists(finite, min_size=3, max_size=20), st.floats(min_value=0.01, max_value=100))
def test_convex_bowl_has_no_barrier(points, scale):
    # a convex curve can never rise above its end points in between
    k = len(points) - 1
    alphas = interpolation_alphas(k)
    bowl = [scale * (a - 0.4) ** 2 for a in alphas]
    s = analyze_slice(bowl, alphas)
    assert not s.barrier
    assert s.interior_min
    assert s.floor_alpha == pytest.approx(0.4, abs=1 / k)


def test_a_bump_is_a_barrier_and_float_noise_is_not():
    alphas = interpolation_alphas(10)
    bump = [1.0, 1.0, 1.1, 1.3, 1.2, 1.0, 0.9, 0.8, 0.8, 0.8, 0.8]
    s = analyze_slice(bump, alphas)
    assert s.barrier and s.barrier_height == pytest.approx(0.3)
    flat = [1.0] * 5 + [1.0 + 1e-7] + [1.0] * 5  # rounding noise of a float32 loss
    assert not analyze_slice(flat, alphas).barrier


def test_nan_slice_reports_nothing():
    alphas = interpolation_alphas(2)
    s = analyze_slice([1.0, float("nan"), 2.0], alphas)
    assert not s.barrier and not s.interior_min and math.isnan(s.floor_loss)


def test_rejects_short_slices():
    with pytest.raises(ValueError):
        analyze_slice([1.0, 2.0], [0.0, 1.0])

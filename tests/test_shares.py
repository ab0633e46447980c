"""The 95% interval of an epoch's share when a random sample of its steps is measured."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgdwalk.shares import count_interval, share


def test_every_step_measured_is_exact():
    s = share(41, 64, 64)
    assert s.value == s.low == s.high == 41 / 64 and s.half_width == 0


def test_nothing_measured_says_nothing():
    s = share(0, 0, 64)
    assert math.isnan(s.value) and (s.low, s.high) == (0.0, 1.0)


@given(st.integers(1, 400), st.data())
def test_the_interval_holds_the_sample_share_and_stays_in_0_1(n, data):
    m = data.draw(st.integers(1, n))
    k = data.draw(st.integers(0, m))
    s = share(k, m, n)
    assert 0.0 <= s.low <= s.value <= s.high <= 1.0


@given(st.integers(2, 100), st.data())
def test_measuring_more_of_an_epoch_never_widens_the_interval(half, data):
    """The same share from twice the sample of the same epoch: no wider."""
    n = data.draw(st.integers(2 * half, 4 * half))
    k = data.draw(st.integers(0, half))
    assert share(2 * k, 2 * half, n).half_width <= share(k, half, n).half_width + 1e-12


@pytest.mark.parametrize(
    ("n", "m", "true_k"),
    [(64, 20, 49), (64, 41, 49), (450, 60, 30), (450, 60, 400), (1000, 100, 500), (24, 8, 3)],
)
def test_coverage_is_near_95_percent(n, m, true_k):
    """Draw m of n steps without replacement many times: the interval holds the epoch's true
    share in about 95% of draws (never far below)."""
    rng = random.Random(n * 1_000 + m + true_k)
    population = [1] * true_k + [0] * (n - true_k)
    truth, hits, trials = true_k / n, 0, 4000
    for _ in range(trials):
        k = sum(rng.sample(population, m))
        s = share(k, m, n)
        hits += s.low - 1e-12 <= truth <= s.high + 1e-12
    assert hits / trials >= 0.92


def test_barrier_counts_scale_with_the_epoch():
    est, lo, hi = count_interval(3, 20, 64)
    assert est == pytest.approx(64 * 3 / 20) and 0 <= lo < est < hi <= 64


@pytest.mark.parametrize("burst", [1, 4])
def test_clustered_coverage_for_bursts_of_alike_steps(burst):
    """Steps in runs that share their property (an epoch's phase): bursts of 4 are not 4 times
    the evidence of one, and the interval knows it."""
    from sgdwalk.sampling import Sampler
    from sgdwalk.shares import clustered

    rng = random.Random(7)
    n, hits, trials = 240, 0, 600
    for trial in range(trials):
        # the population: long stretches of alike steps (interior minima come and go slowly)
        population, value = [], 0
        while len(population) < n:
            value = 1 - value if rng.random() < 0.5 else value
            population += [value] * rng.randint(3, 12)
        population = population[:n]
        truth = sum(population) / n
        s = Sampler(rate=0.25, seed=trial, burst=burst)
        groups: dict[int, list[int]] = {}
        for t in range(1, n + 1):
            if s.due(t):
                groups.setdefault(s.cluster(t), []).append(population[t - 1])
        if not groups:
            continue
        k = [sum(g) for g in groups.values()]
        m = [len(g) for g in groups.values()]
        got = clustered(k, m, n)
        hits += got.low - 1e-12 <= truth <= got.high + 1e-12
    assert hits / trials >= 0.90

"""The time budget (sgdwalk.budget) on a simulated clock, and what it does to a Walker's loop:
a random share of steps measured, the epochs' shares with their 95% intervals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sgdwalk
from sgdwalk import budget as budget_module
from sgdwalk.budget import AUTO_FRACTION, Budget, Pace
from sgdwalk.sampling import Sampler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", c)
    return c


def simulate(pace: Pace, clock: Clock, steps: int, train: float, measured_cost: float,
             plain_cost: float = 0.0) -> float:  # fmt: skip
    """Steps of ``train`` seconds in the loop; the Instrument's own seconds per step depend on
    whether the sampler measures it. Returns the measuring's share of the training time."""
    inside = loop = 0.0
    for step in range(1, steps + 1):
        pace.step_started()
        with pace.own():
            cost = measured_cost if pace.sampler.due(step) else plain_cost
            clock.now += cost
        inside += cost
        pace.step_ended(pace.sampler.due(step))
        clock.now += train
        loop += train
    return inside / loop


def test_the_budget_holds_measuring_to_its_share_of_training(clock):
    """A measured step 34x a training step (the digits MLP): about 1.5% of steps measured, the
    measuring a half of the training time."""
    sampler = Sampler(seed=1)
    pace = Pace(Budget(0.5), sampler)
    share = simulate(pace, clock, 20_000, train=0.0006, measured_cost=0.0207, plain_cost=0.00002)
    assert 0.4 < share < 0.6
    assert 0.01 < sampler.rate < 0.02


def test_auto_measures_every_step_of_a_short_run_and_samples_a_long_one(clock):
    short = Pace(Budget(None, auto=True, total_steps=240), Sampler(seed=1))
    simulate(short, clock, 240, train=0.0006, measured_cost=0.02)
    assert short.budget.every_step and "every step measured" in short.notes()[0]
    assert all(short.sampler.due(t) for t in range(1, 241))
    long = Pace(Budget(None, auto=True, total_steps=100_000), Sampler(seed=1))
    share = simulate(long, clock, 4000, train=0.01, measured_cost=0.2)
    assert long.budget.fraction == AUTO_FRACTION and "random share" in long.notes()[0]
    assert share < 1.0 and long.notes() == []  # said once


def test_a_pass_waits_until_it_fits(clock):
    """A 2 s pass at the start: the next (as long) fits once the two are within half the
    training time plus the slack, 2 + 2 <= 0.5 t + 0.5, at t = 7 s of training."""
    b = Budget(0.5)
    b.step_started()
    b.spent(2.0, in_pass=True)
    clock.now += 2.0
    waited = 0
    while not b.allows_pass():
        b.step_started()
        clock.now += 0.5  # training, counted at the next step's start
        waited += 1
        assert waited < 100
    assert b.training == pytest.approx(7.0) and waited == 15  # the first only closes the pass


def _loop(tmp_path, name, budget, steps=120):
    torch.manual_seed(0)
    x, y = torch.randn(2048, 20), torch.randint(0, 4, (2048,))
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with sgdwalk.Walker(model, (x, y), session=name, sessions_dir=tmp_path, budget=budget,
                        seed=3) as walker:  # fmt: skip
        walker.attach(opt)
        for step in range(steps):
            walker.epoch = step // 40 + 1
            i = step * 16 % 2048
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
    with sgdwalk.open_session(tmp_path / name) as s:
        return list(s.steps()), list(s.epochs()), s.config


def test_the_walker_by_default_measures_a_share_and_says_how_sure_each_epoch_is(tmp_path):
    steps, epochs, config = _loop(tmp_path, "sampled", budget=AUTO_FRACTION)
    assert config["budget"] == 0.5 and len(steps) == 120
    measured = [r.step for r in steps if r.measured]
    assert 1 <= len(measured) < 120
    for e in epochs:
        assert e.measured_steps is not None and e.measured_steps <= 40
        if e.measured_steps:
            assert e.interior_min_low <= e.interior_min_fraction <= e.interior_min_high
            assert e.barriers_low <= e.barriers_high <= 40
    every, every_epochs, _ = _loop(tmp_path, "every", budget=None)
    assert all(r.measured for r in every)
    for e in every_epochs:  # every step measured: each interval is the value itself
        assert e.measured_steps == 40
        assert e.interior_min_low == e.interior_min_fraction == e.interior_min_high
        assert e.barriers_low == e.barriers_high == e.barriers
        assert not math.isnan(e.train_loss)

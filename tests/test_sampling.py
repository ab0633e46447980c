"""Which steps are measured: every N-th, or a random share drawn once per step."""

from __future__ import annotations

import random

from sgdwalk.sampling import Sampler


def test_every_nth_step_from_the_first():
    s = Sampler(every=3)
    assert [t for t in range(1, 11) if s.due(t)] == [1, 4, 7, 10]
    assert not any(Sampler(every=0).due(t) for t in range(1, 50))


def test_a_random_share_is_drawn_once_per_step_and_leaves_the_global_rng_alone():
    random.seed(5)
    state = random.getstate()
    s = Sampler(rate=0.25, seed=3)
    first = [s.due(t) for t in range(1, 4001)]
    assert random.getstate() == state
    assert 0.22 < sum(first) / len(first) < 0.28
    t = Sampler(rate=0.25, seed=3)
    for step in range(1, 200):  # the meter asks about step t, then t + 1 before t + 1 comes
        assert t.due(step) == first[step - 1]
        assert t.due(step + 1) == t.due(step + 1) == first[step]


def test_the_measured_steps_do_not_follow_the_epoch():
    """No aliasing: with 24 steps an epoch, each position in the epoch is measured about as
    often as any other."""
    s = Sampler(rate=0.2, seed=1)
    per_position = [0] * 24
    for step in range(1, 24 * 2000 + 1):
        per_position[(step - 1) % 24] += s.due(step)
    assert max(per_position) / min(per_position) < 1.25


def test_a_new_rate_applies_to_steps_not_yet_drawn():
    s = Sampler(rate=1.0)
    assert s.due(1) and s.due(2)
    s.set_rate(0.0)
    assert s.due(2) and not any(s.due(t) for t in range(3, 100))
    s.set_every(2)
    assert s.due(101) and not s.due(102)


def test_bursts_measure_the_rate_in_runs_of_consecutive_steps():
    s = Sampler(rate=0.2, seed=2, burst=4)
    due = [s.due(t) for t in range(1, 40_001)]
    assert 0.18 < sum(due) / len(due) < 0.22
    runs, run = [], 0
    for d in due:
        if d:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert min(runs) >= 4  # a burst is never cut short (two may run into each other)
    starts = {s.cluster(t) for t in range(39_000, 40_001) if s.due(t)}
    assert all(s.due(b) and (b == 1 or s.cluster(b) == b) for b in starts)

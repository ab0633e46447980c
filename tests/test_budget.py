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
    assert not short.budget.samples and "every step measured" in short.notes()[0]
    assert all(short.sampler.due(t) for t in range(1, 241))
    long = Pace(Budget(None, auto=True, total_steps=100_000), Sampler(seed=1))
    share = simulate(long, clock, 4000, train=0.01, measured_cost=0.2)
    assert long.budget.fraction == AUTO_FRACTION and "random share" in long.notes()[0]
    assert share < 1.0 and long.notes() == []  # said once


def test_auto_watches_a_run_of_short_steps_for_its_three_minutes_not_for_half_its_training(clock):
    """20,000 steps of 1 ms (20 s of training) that would take 620 s measured every step: not
    every step, but not 10 s of measuring either: the whole run takes about AUTO_SECONDS."""
    pace = Pace(Budget(None, auto=True, total_steps=20_000), Sampler(seed=1))
    share = simulate(pace, clock, 20_000, train=0.001, measured_cost=0.03)
    assert pace.budget.fraction == AUTO_FRACTION and "within about 180 s" in pace.notes()[0]
    assert 170 < clock.now < 190  # the whole run, training and measuring
    assert 7 < share < 8.5 and 0.2 < pace.sampler.rate < 0.3


def test_passes_leave_the_steps_their_part_of_the_budget(clock):
    """``sgdwalk run --epochs 60`` on the digits MLP on a busy machine: 24 steps of 1 ms an epoch
    (a measured one 90 ms), an epoch summary of 24 ms and a 2 s pass asked for at each epoch's
    end. Left to take whatever the budget frees, the passes took three quarters of it and 22
    epochs had no step measured (419 steps in all); held to half while the steps want more, the
    steps get theirs (535, with 10 epochs unmeasured)."""
    pace, measured, per_epoch = (
        Pace(Budget(None, auto=True, total_steps=1440), Sampler(seed=1, burst=4)),
        0,
        [],
    )
    with pace.own(in_pass=True):  # the pass at the start
        clock.now += 2.0
    for step in range(1, 1441):
        pace.step_started()
        with pace.own():
            due = pace.sampler.due(step)
            clock.now += 0.09 if due else 0.0
        measured += due
        pace.step_ended(due)
        clock.now += 0.001
        if step % 24 == 0:
            with pace.own():
                clock.now += 0.024  # the epoch summary
            if pace.pass_fits():
                with pace.own(in_pass=True):
                    clock.now += 2.0
            per_epoch.append(measured - sum(per_epoch))
    b = pace.budget
    assert measured >= 500 and sum(n == 0 for n in per_epoch) <= 12
    assert b.passes < 0.7 * b.inside


def test_a_pass_waits_until_it_fits(clock):
    """A 2 s pass at the start: the next (as long) fits once the two are within half the
    training time, 2 + 2 <= 0.5 t, at t = 8 s of training."""
    b = Budget(0.5)
    b.step_started()
    b.spent(2.0)
    b.passed(2.0)
    clock.now += 2.0
    waited = 0
    while not b.allows_pass():
        b.step_started()
        clock.now += 0.5  # training, counted at the next step's start
        waited += 1
        assert waited < 100
    assert b.training == pytest.approx(8.0) and waited == 17  # the first only closes the pass


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


def test_a_walker_step_that_is_not_measured_costs_no_session_work(tmp_path, monkeypatch):
    """The session's config and info (library versions: slow to read) are made once, at the first
    step, not asked again on every step."""
    from sgdwalk import walker as walker_module

    calls = []
    real = walker_module.describe
    monkeypatch.setattr(walker_module, "describe", lambda w: calls.append(1) or real(w))
    _loop(tmp_path, "once", budget=AUTO_FRACTION)
    assert len(calls) == 1


def test_the_walker_counts_its_hooks_as_its_own_time_never_as_training(tmp_path):
    """Every second the loop waits inside the Walker's hooks is the Walker's: with a budget of a
    half, its own seconds stay near half the loop's once the first steps' are paid."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = sgdwalk.Walker(model, (x, y), sessions_dir=tmp_path, session="own", budget=0.5)
    w.attach(opt)
    for _ in range(5):
        for i in range(0, 256, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
    b = w.instrument.pace.budget
    w.close()
    assert b is not None and b.steps == 80 and b.training > 0 and b.inside > 0
    assert b.cost[False] < b.cost[True]  # an unmeasured step's hooks cost less than a measured one


def test_run_takes_a_budget_and_says_how_sure_its_epochs_are(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sgdwalk.tui.cli", "run", "--headless",
                          "--epochs", "3", "--hessian-every", "off", "--budget", "0.2",
                          "--sessions-dir", str(tmp_path), "--session", "b"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with sgdwalk.open_session(tmp_path / "b") as s:
        assert s.config["budget"] == "0.2"
        epochs, steps = list(s.epochs()), list(s.steps())
        measured = sum(r.measured for r in steps)
    assert 1 <= measured < len(steps) == 72
    assert sum(e.measured_steps for e in epochs) == measured
    assert "measured" in out.stdout + out.stderr  # "interior-min 80% ±32%, 5 of 24 measured"
    listing = subprocess.run([sys.executable, "-m", "sgdwalk.tui.cli", "ls", "--sessions-dir",
                              str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert "of 72 measured" in listing.stdout, listing.stdout


@pytest.mark.parametrize("text, expect", [("auto", "auto"), ("off", "off"), ("0.5", "0.5"),
                                          ("2", "2"), ("every", "off")])  # fmt: skip
def test_budget_values_read_and_print_one_way(text, expect):
    from sgdwalk.values import TimeBudget

    assert str(TimeBudget.parse(text)) == expect


@pytest.mark.parametrize("text", ["0", "-1", "nan", "abc", "101", ""])
def test_a_budget_that_is_no_share_is_one_line(text):
    from sgdwalk.errors import ConfigError
    from sgdwalk.values import TimeBudget

    with pytest.raises(ConfigError, match="--budget: use 'auto', 'off'"):
        TimeBudget.parse(text)


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.text, self.tty = "", tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_the_walker_line_says_what_it_does_on_a_terminal_and_nothing_elsewhere():
    from sgdwalk.records import PhaseProgressed, StepMeasured
    from sgdwalk.walker_progress import ProgressLine

    b = Budget(0.5)
    b.training, b.inside = 10.0, 4.1
    term = _Terminal(True)
    line = ProgressLine(lambda: b, term)
    line.show(StepMeasured(1, 1, 0.1, 8, 1.0, 0.0))
    assert term.text == "\rsgdwalk: step 1 · 0 measured (0.0%) · watching +41%\x1b[K"
    line._next = 0.0
    line.show(PhaseProgressed(1, 1, "curvature", 12, 63))
    assert term.text.endswith("· watching +41% · curvature 12/63\x1b[K")
    line.clear()
    assert term.text.endswith("\r\x1b[K")
    log = _Terminal(False)
    quiet = ProgressLine(lambda: b, log)
    quiet.show(StepMeasured(1, 1, 0.1, 8, 1.0, 0.0))
    quiet.clear()
    assert log.text == ""


def test_a_walker_takes_one_thread_per_free_core_unless_the_script_chose(monkeypatch):
    from sgdwalk import cpu

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(cpu, "usable_cores", lambda: 4)
        monkeypatch.setattr(cpu, "others_running", lambda: 3)  # one of four cores free
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        torch.set_num_threads(4)  # torch's default: one per core
        note = cpu.adopt_threads()
        assert torch.get_num_threads() == 1 and note is not None and "4 -> 1" in note
        torch.set_num_threads(3)  # the script's own choice
        assert cpu.adopt_threads() is None and torch.get_num_threads() == 3
        torch.set_num_threads(4)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        assert cpu.adopt_threads() is None and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_a_pause_between_epochs_names_the_epoch_of_the_step_it_follows(tmp_path, monkeypatch):
    """The loop sets ``walker.epoch = 2`` before its first step of epoch 2; a pause held then
    comes after step 3, the last of epoch 1."""
    torch.manual_seed(0)
    x, y = torch.randn(48, 8), torch.randint(0, 3, (48,))
    model = nn.Sequential(nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = sgdwalk.Walker(model, (x, y), sessions_dir=tmp_path, session="p", budget=None)
    held = []
    monkeypatch.setattr(w.steps.record, "hold", lambda c, step, epoch: held.append((step, epoch)))
    w.attach(opt)
    for epoch in (1, 2):
        w.epoch = epoch
        for i in range(0, 48, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
    w.close()
    assert held == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]


def test_the_walker_measures_batch_sharpness_on_the_batch_the_loop_reports(tmp_path):
    """g·H_B g / ‖g‖² at θ_t on the step's reported batch, against autograd in float64."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = sgdwalk.Walker(model, (x, y), sessions_dir=tmp_path, session="bs", budget=None,
                       batch_sharpness=True)  # fmt: skip
    w.attach(opt)
    expected = []
    for i in range(0, 64, 16):
        xb, yb = x[i : i + 16], y[i : i + 16]
        params = list(model.parameters())
        loss = nn.functional.cross_entropy(model(xb), yb)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        g = torch.cat([t.reshape(-1) for t in grads])
        hg = torch.cat([t.reshape(-1) for t in torch.autograd.grad(g @ g.detach(), params)])
        expected.append(float(g.detach() @ hg / (g.detach() @ g.detach())))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        w.report(loss, batch=(xb, yb))
        opt.step()
    w.close()
    with sgdwalk.open_session(tmp_path / "bs") as s:
        got = [r.batch_sharpness for r in s.steps()]
    assert got == pytest.approx(expected, rel=1e-9)


def test_a_walker_asked_for_batch_sharpness_without_the_batch_says_how_to_give_it(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    model = nn.Sequential(nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with sgdwalk.Walker(model, (x, y), sessions_dir=tmp_path, session="nb", budget=None,
                        batch_sharpness=True) as w:  # fmt: skip
        w.attach(opt)
        for i in range(0, 32, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
    with sgdwalk.open_session(tmp_path / "nb") as s:
        notes = [e.message for e in s.events() if "batch sharpness needs" in e.message]
        assert len(notes) == 1 and all(r.batch_sharpness is None for r in s.steps())


def test_ls_shows_the_learning_rate_a_schedule_used_not_its_first_value(tmp_path):
    """A warm-up then a decay: the config holds the first step's lr; ls shows peak/last."""
    import subprocess
    import sys

    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    shape = [0.1, 1.0, 0.5, 0.25]  # × 0.1: 0.01 warm-up, 0.1 peak, 0.025 last
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: shape[min(i, 3)])
    with sgdwalk.Walker(model, (x, y), sessions_dir=tmp_path, session="lr", budget=None) as w:
        w.attach(opt)
        for i in range(0, 64, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()
            sched.step()
    with sgdwalk.open_session(tmp_path / "lr") as s:
        assert s.lr_range() == pytest.approx((0.1, 0.025))
    out = subprocess.run([sys.executable, "-m", "sgdwalk.tui.cli", "ls", "--sessions-dir",
                          str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert "0.1/0.025" in out.stdout, out.stdout


def test_ranks_keep_asking_each_other_whatever_auto_settled_on_each(clock):
    """``auto`` settles on each rank by its own clock; the ranks' collectives must still match
    step for step, so a rank that settled on every step asks the others as one that did not."""

    class Peers:
        calls = 0

        def agree_max(self, value: float) -> float:
            Peers.calls += 1
            return value

    short = Pace(Budget(None, auto=True, total_steps=240), Sampler(seed=1), Peers())
    simulate(short, clock, 240, train=0.0006, measured_cost=0.02)
    assert not short.budget.samples  # settled: every step
    assert Peers.calls >= 240  # one collective a step, from first to last

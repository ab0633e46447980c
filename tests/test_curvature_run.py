"""Curvature inside a digits run: schedule, records in the session, headless line, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from canned import HANG

from sgdwalk import open_session
from sgdwalk.config import build_config
from sgdwalk.records import CurvatureMeasured, EpochEnded, PhaseProgressed

SMALL = {"train_size": 300, "top_k": 3, "align_samples": 2, "points": 2, "batch_size": "100"}
CLI = [sys.executable, "-c", "from sgdwalk.tui.cli import main; main()", "run", "--headless"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def _records(**flags):
    import torch

    from sgdwalk.train import prepare

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return list(prepare(build_config({**SMALL, **flags})).records())
    finally:
        torch.set_num_threads(before)


def test_step_schedule_and_progress() -> None:
    recs = _records(epochs=2, hessian_every="2s", align_batch_sizes="50,full")
    curv = [r for r in recs if isinstance(r, CurvatureMeasured)]
    assert [(r.step, r.epoch) for r in curv] == [(0, 0), (2, 1), (4, 2), (6, 2)]
    assert all(len(r.eigenvalues) == 3 and r.eigenvalues[0] >= r.eigenvalues[-1] for r in curv)
    assert all([a.batch_size for a in r.alignment] == [50, 300] for r in curv)
    phases = [r for r in recs if isinstance(r, PhaseProgressed)]
    assert phases and all(r.phase == "curvature" and 0 < r.done <= r.total for r in phases)
    first = recs.index(curv[0])
    assert all(isinstance(r, PhaseProgressed) for r in recs[:first])  # before the first update


def test_off_means_no_curvature() -> None:
    recs = _records(epochs=1, hessian_every="off")
    assert not any(isinstance(r, CurvatureMeasured | PhaseProgressed) for r in recs)


@pytest.mark.slow
def test_headless_digits_run_stores_curvature(tmp_path: Path) -> None:
    args = [*CLI, "--epochs", "2", "--train-size", "300", "--top-k", "3", "--align-samples", "2",
            "--batch-size", "100", "--sessions-dir", str(tmp_path), "--session", "c"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=HANG)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": curvature pass, λ1 ") == 3  # the dashboard's event line
    assert " b100=" in out.stdout and " b300=" in out.stdout
    s = open_session(tmp_path / "c")
    curv = list(s.curvature())
    assert [(r.step, r.epoch) for r in curv] == [(0, 0), (3, 1), (6, 2)]
    assert all(len(r.eigenvalues) == 3 and max(r.residuals) <= 1e-3 for r in curv)
    assert [a.batch_size for a in curv[-1].alignment] == [100, 300]
    assert len(list(s.epochs())) == 2 and isinstance(next(s.epochs()), EpochEnded)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-k", "999999"], "--top-k: 999999 is larger than the model's"),
        (["--align-batch-sizes", "0,100"], "--align-batch-sizes:"),
        (["--hessian-probe", "99999"], "--hessian-probe: 99999 is larger than the training split"),
        (["--hessian-every", "3x"], "--hessian-every:"),
    ],
)
def test_bad_curvature_input_is_one_line_exit_2(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = subprocess.run([*CLI, *flags, "--sessions-dir", str(tmp_path)], capture_output=True,
                         text=True, env=_env(), timeout=HANG)  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr and not any(tmp_path.iterdir())


def test_a_failed_curvature_pass_is_a_warning_and_the_steps_go_on(tmp_path):
    """A model whose operations have no double backward: each pass is one warning with a hint,
    the slices of every step are kept, and the session ends finished."""
    import torch
    from torch import nn

    import sgdwalk

    class NoSecondDerivative(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.tanh(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            if torch.is_grad_enabled():
                raise RuntimeError("derivative for the backward of NoSecondDerivative is not "
                                   "implemented")  # fmt: skip
            return g * (1 - torch.tanh(x) ** 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(NoSecondDerivative.apply(self.a(x)))

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with sgdwalk.Walker(model, (x, y), session="n", sessions_dir=tmp_path, hessian_every=2,
                        slice_mode="loop", budget=None) as walker:  # fmt: skip
        walker.attach(opt)
        for _ in range(4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[:16]), y[:16]).backward()
            opt.step()
    with sgdwalk.open_session(tmp_path / "n") as s:
        steps, events = list(s.steps()), list(s.events())
        assert s.status == "finished" and [r.step for r in steps] == [1, 2, 3, 4]
        assert all(r.measured for r in steps) and list(s.curvature()) == []
    failed = [e for e in events if "curvature pass at step" in e.message]
    assert [e.step for e in failed] == [0, 2, 4] and all(e.level == "warning" for e in failed)
    assert "RuntimeError: derivative for the backward of NoSecondDerivative" in failed[0].message


def test_a_pass_owed_to_the_budget_and_run_at_an_epochs_last_step_answers_for_that_epoch(
    monkeypatch,
) -> None:
    """The epoch-1 pass waits for the budget until step 6, the last of epoch 2: that pass is also
    epoch 2's (the same θ), not one of two in a row."""
    from sgdwalk.budget import Pace

    answers = iter([True, False, False, False, True, True, True])  # the calls, in order
    monkeypatch.setattr(Pace, "pass_fits", lambda self: next(answers))
    recs = _records(epochs=3, hessian_every="1", budget="0.5", measure_every=1)
    curv = [r.step for r in recs if isinstance(r, CurvatureMeasured)]
    assert curv == [0, 6, 9]

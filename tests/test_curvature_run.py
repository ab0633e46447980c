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

"""CUDA smoke tests (marked ``gpu``; skipped on machines without CUDA)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdwalk.batches import make_chunks
from sgdwalk.config import build_config
from sgdwalk.probe import Evaluator, flat_params
from sgdwalk.records import CurvatureMeasured, StepMeasured
from sgdwalk.slicing import Slicer
from sgdwalk.train import prepare

pytestmark = pytest.mark.gpu


def test_a_short_run_on_cuda_measures_every_step():
    cfg = build_config({"device": "cuda", "epochs": 1, "train_size": 256, "top_k": 3,
                        "align_samples": 2, "align_batch_sizes": "32,full"})  # fmt: skip
    run = prepare(cfg)
    assert run.device.type == "cuda"
    recs = list(run.records())
    steps = [r for r in recs if isinstance(r, StepMeasured)]
    assert len(steps) == 4 and all(len(r.slice) == 11 for r in steps)
    assert all(math.isfinite(v) for r in steps for v in r.slice)
    assert all(b.slice[0] == a.slice[-1] for a, b in zip(steps, steps[1:], strict=False))
    curv = [r for r in recs if isinstance(r, CurvatureMeasured)]
    assert len(curv) == 2 and all(len(c.eigenvalues) == 3 for c in curv)


def test_cuda_slice_matches_cpu_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)
    ).double()
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 3, (64,))
    theta0 = flat_params(model)
    theta1 = theta0 + 0.05 * torch.randn_like(theta0)
    alphas = [j / 10 for j in range(11)]
    cpu = Slicer(Evaluator(model), "loop").losses(theta0, theta1, alphas, make_chunks(x, y, 16))
    gpu_model = model.cuda()
    chunks = make_chunks(x.cuda(), y.cuda(), 16)
    gpu = Slicer(Evaluator(gpu_model), "loop").losses(theta0.cuda(), theta1.cuda(), alphas, chunks)
    assert gpu.cpu().tolist() == pytest.approx(cpu.tolist(), rel=1e-9)


def test_cuda_vmapped_slice_matches_the_loop_and_is_the_default():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    ).double().cuda()  # fmt: skip
    x = torch.randn(64, 3, 8, 8, dtype=torch.float64, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    chunks = make_chunks(x, y, 16)
    theta0 = flat_params(model)
    theta1 = theta0 + 0.05 * torch.randn_like(theta0)
    alphas = [j / 10 for j in range(11)]
    looped = Slicer(Evaluator(model), "loop").losses(theta0, theta1, alphas, chunks)
    batched = Slicer(Evaluator(model), "vmap").losses(theta0, theta1, alphas, chunks)
    assert batched.cpu().tolist() == pytest.approx(looped.cpu().tolist(), rel=1e-9)
    run = prepare(build_config({"device": "cuda", "model": "cnn", "epochs": 1, "train_size": 256,
                                "hessian_every": "off"}))  # fmt: skip
    assert run.instrument.slicer.mode == "vmap" and run.info["slice_mode"] == "vmap"

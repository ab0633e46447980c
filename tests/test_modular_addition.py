"""The embedded transformer run: ``--model transformer --dataset modular-addition`` (a one-block
decoder on a + b mod p, generated) from the command line, its token inputs through every slice
mode, curvature through its attention, and the ``grokking`` preset's settings."""

from __future__ import annotations

import math

import pytest
import torch
from canned import run_cli

from sgdwalk import open_session
from sgdwalk.config import PRESETS, build_config
from sgdwalk.data import load_data
from sgdwalk.records import CurvatureMeasured, StepMeasured

TINY = {"model": "transformer", "dataset": "modular-addition", "train_size": 48,
        "batch_size": "16", "epochs": 1, "points": 3, "top_k": 2, "align_batch_sizes": "16",
        "align_samples": 1, "budget": "off", "optimizer": "adamw", "lr": 1e-3,
        "weight_decay": 1.0}  # fmt: skip


def test_the_data_is_every_pair_once_as_token_sequences():
    data = load_data("modular-addition", "data", torch.device("cpu"))
    p = data.num_classes
    x = torch.cat([data.x_train, data.x_val])
    y = torch.cat([data.y_train, data.y_val])
    assert p == 59 and data.tokens and x.dtype == torch.int64 and len(x) == p * p
    assert len({(a, b) for a, b, _ in x.tolist()}) == p * p  # each pair once, train or val
    assert torch.equal(x[:, 2], torch.full((p * p,), p))  # "=" is token p
    assert torch.equal(y, (x[:, 0] + x[:, 1]) % p)
    assert data.n_train == p * p // 2 and torch.equal(data.inputs(slice(0, 5)), data.x_train[:5])


def _slices(mode: str) -> list[list[float]]:
    from sgdwalk.train import prepare

    run = prepare(build_config({**TINY, "slice_mode": mode, "hessian_every": "off"}))
    return [r.slice for r in run.records() if isinstance(r, StepMeasured)]


def test_token_inputs_give_one_slice_whichever_mode_evaluates_it(float64):
    """The first layer is an Embedding: no first-layer shortcut, and vmap over the parameters
    takes integer inputs; every mode measures the same losses (float64)."""
    loop = _slices("loop")
    assert len(loop) == 3 and all(len(s) == 4 and all(map(math.isfinite, s)) for s in loop)
    for mode in ("vmap", "auto"):
        got = [x for s in _slices(mode) for x in s]
        assert got == pytest.approx([x for s in loop for x in s], rel=1e-10)


def test_curvature_passes_run_through_the_decoder_attention(float64):
    from sgdwalk.train import prepare

    records = list(prepare(build_config({**TINY, "hessian_every": "3s"})).records())
    passes = [r for r in records if isinstance(r, CurvatureMeasured)]
    assert [p.step for p in passes] == [0, 3]
    for p in passes:
        assert len(p.eigenvalues) == 2 and all(map(math.isfinite, p.eigenvalues))
    last = passes[-1]  # AdamW's preconditioned sharpness, after its first steps
    assert all(math.isfinite(v) for v in (last.sharpness, last.threshold, last.edge_ratio))
    assert last.threshold == pytest.approx((2 + 2 * 0.9) / (1 - 0.9) / 1e-3)


def test_the_command_line_run_records_slices_and_a_finite_curvature_pass(tmp_path):
    code, out, err = run_cli("run", "--headless", "--model", "transformer", "--dataset",
                             "modular-addition", "--train-size", "48", "--batch-size", "16",
                             "--epochs", "1", "--points", "3", "--top-k", "2",
                             "--hessian-every", "2s", "--align-batch-sizes", "16",
                             "--align-samples", "1", "--optimizer", "adamw", "--lr", "1e-3",
                             "--weight-decay", "1", "--session", "mod",
                             "--sessions-dir", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "transformer on modular-addition" in out + err
    with open_session(tmp_path / "mod") as s:
        assert s.status == "finished"
        steps = list(s.steps())
        assert len(steps) == 3 and all(len(r.slice) == 4 for r in steps)
        passes = list(s.curvature())
        assert [p.step for p in passes] == [0, 2]
        assert all(math.isfinite(v) for p in passes for v in p.eigenvalues)
        assert math.isfinite(passes[-1].edge_ratio)
        (epoch,) = s.epochs()
        assert 0 <= epoch.train_acc <= 1 and 0 <= epoch.val_acc <= 1


def test_the_grokking_preset_is_the_papers_recipe():
    cfg = build_config({"preset": "grokking"})
    assert (cfg.model, cfg.dataset, cfg.optimizer) == ("transformer", "modular-addition", "adamw")
    assert cfg.lr == 1e-3 and cfg.weight_decay == 1.0 and cfg.full_batch
    assert cfg.budget.fraction is None and not cfg.budget.auto  # on schedule, not sampled
    assert cfg.betas is not None and (cfg.betas.beta1, cfg.betas.beta2) == (0.9, 0.98)
    assert build_config({"preset": "grokking", "epochs": 3}).epochs == 3  # flags win
    assert "grokking" in PRESETS

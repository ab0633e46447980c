"""``sgdwalk run --optimizer``: each built-in optimizer trains with the knobs it was given, its
curvature passes carry the optimizer's own edge (``sgdwalk.geometry``), and the session says which
optimizer it was, for ``ls``, ``compare`` and the dashboard. The edge's formulas are tested on
quadratics in test_geometry.py; here, that a real run wires them up."""

from __future__ import annotations

import math

import pytest
import torch
from canned import run_cli

from sgdwalk import open_session
from sgdwalk.config import build_config
from sgdwalk.records import CurvatureMeasured, StepMeasured
from sgdwalk.tui.text import optimizer_of

TINY = {"train_size": 120, "batch_size": "40", "epochs": 1, "points": 2, "top_k": 2,
        "align_batch_sizes": "40", "align_samples": 1, "hessian_every": "1s", "budget": "off",
        "lr": 0.01}  # fmt: skip

# optimizer flags -> (torch class, its constant c: threshold = c/η)
FORMS = {
    "sgd": ({"momentum": 0.5}, torch.optim.SGD, 2 + 2 * 0.5),
    "adam": ({"betas": "0.8,0.99", "eps": 1e-6, "weight_decay": 1e-3}, torch.optim.Adam,
             (2 + 2 * 0.8) / (1 - 0.8)),
    "adamw": ({"betas": "0.9,0.98", "weight_decay": 1.0}, torch.optim.AdamW,
              (2 + 2 * 0.9) / (1 - 0.9)),
    "rmsprop": ({"momentum": 0.3, "eps": 1e-7}, torch.optim.RMSprop, 2 + 2 * 0.3),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FORMS))
def test_each_optimizer_trains_and_its_passes_carry_a_finite_edge(name, float64, tmp_path):
    from sgdwalk.train import prepare

    flags, kind, c = FORMS[name]
    run = prepare(build_config({**TINY, **flags, "optimizer": name}))
    assert type(run.optimizer) is kind and next(run.model.parameters()).dtype == torch.float64
    group = run.optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == flags.get("weight_decay", 0.0)
    if "betas" in flags:
        assert tuple(group["betas"]) == tuple(float(b) for b in flags["betas"].split(","))
    assert group["eps" if "eps" in flags else "lr"] == flags.get("eps", 0.01)
    records = list(run.records())
    steps = [r for r in records if isinstance(r, StepMeasured)]
    assert len(steps) == 3 and all(r.lr == 0.01 and len(r.slice) == 3 for r in steps)
    passes = [r for r in records if isinstance(r, CurvatureMeasured)]
    assert [p.step for p in passes] == [0, 1, 2, 3]
    for p in passes[1:]:  # after a first step: an adaptive optimizer's state exists
        assert all(math.isfinite(v) for v in (p.sharpness, p.threshold, p.edge_ratio))
        assert p.threshold == pytest.approx(c / 0.01)
        assert p.sharpness == pytest.approx(p.edge_ratio * p.threshold)
        assert p.sharpness > 0
    if name == "sgd":  # one lr, no preconditioner: λ1 + wd over (2+2β)/η, read off the pass
        assert passes[0].sharpness == pytest.approx(passes[0].eigenvalues[0])
    else:  # before the first step Adam's and RMSprop's preconditioner does not exist yet
        assert passes[0].edge_ratio is None


def test_the_session_names_the_optimizer_and_keeps_its_knobs(tmp_path):
    code, out, err = run_cli("run", "--headless", "--hessian-every", "off", "--epochs", "1",
                             "--train-size", "80", "--batch-size", "40", "--points", "2",
                             "--optimizer", "adamw", "--lr", "0.001", "--betas", "0.9,0.98",
                             "--eps", "1e-7", "--weight-decay", "1", "--session", "aw",
                             "--sessions-dir", str(tmp_path))  # fmt: skip
    assert code == 0, err
    with open_session(tmp_path / "aw") as s:
        cfg = s.config
        assert (cfg["optimizer"], cfg["betas"], cfg["eps"]) == ("adamw", "0.9,0.98", 1e-7)
        assert [r.lr for r in s.steps()] == [0.001, 0.001]
    again = build_config({k: cfg[k] for k in ("optimizer", "betas", "eps")})  # as a child reads it
    assert again.betas is not None and (again.betas.beta1, again.betas.beta2) == (0.9, 0.98)
    assert again.eps == 1e-7
    code, out, _ = run_cli("ls", "--sessions-dir", str(tmp_path))
    (row,) = [line for line in out.splitlines() if "aw" in line and "adamw" in line]
    assert "0.001" in row


def test_sessions_name_their_optimizer_one_way():
    assert optimizer_of({"model": "mlp"}) == "sgd"  # a run from before --optimizer: SGD
    assert optimizer_of({"source": "walker", "optimizer": "AdamW"}) == "adamw"
    assert optimizer_of({"source": "walker", "optimizer": None}) is None
    assert optimizer_of({"optimizer": "rmsprop"}) == "rmsprop"


def _passes(line: str | None) -> list:
    from sgdwalk.records import CurvatureMeasured

    return [CurvatureMeasured(0, 0, [3.0], [0.0], 10, [], edge_line=line)]  # no edge ratio yet


@pytest.mark.parametrize("config, line, drawn", [
    ({"lr": 0.1}, None, True),  # a run from before passes carried the edge: SGD's line
    ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}, None, True),
    ({"optimizer": "adamw", "lr": 0.1}, "(2+2β1)/((1−β1)η)", False),  # before its 1st step
    ({"source": "walker", "optimizer": "LBFGS", "lr": 0.1}, None, False),  # edge not known
])  # fmt: skip
def test_no_sgd_line_stands_in_for_another_optimizers(config, line, drawn):
    from sgdwalk.tui.figures.base import FigureData
    from sgdwalk.tui.figures.sharpness import edge_text, sharpness_series

    d = FigureData("s", config=config, steps=[], curvature=_passes(line))
    series = sharpness_series(d)
    assert bool(next(iter(series.values()))[0]) is drawn
    assert bool(edge_text(d)) is drawn


@pytest.mark.parametrize("config, shown", [
    ({"optimizer": "adamw", "lr": 1e-3}, "adamw lr 0.001"),
    ({"source": "walker", "optimizer": "RMSprop"}, "rmsprop lr 0.001"),
    ({"optimizer": "sgd"}, "lr 0.001"),  # plain SGD, the paper's, unnamed
    ({}, "lr 0.001"),
])  # fmt: skip
def test_the_status_line_names_the_optimizer_beside_the_steps_lr(config, shown):
    from sgdwalk.tui.dashboard.buffers import Buffers, facts_of
    from sgdwalk.tui.dashboard.status import replay_fields, run_fields

    b = Buffers(facts=facts_of("s", {}, config))
    b.add(StepMeasured(1, 1, 1e-3, 64, 1.0, 0.1))
    assert shown in run_fields(b, 200) and shown in replay_fields(b, 1, 1, 1, "finished")


def test_a_sweep_keeps_betas_as_one_pair():
    from sgdwalk.sweep import grid

    swept, shared = grid({"optimizer": "adam,adamw", "betas": "0.9,0.98"})
    assert swept == {"optimizer": ["adam", "adamw"]} and shared == {"betas": "0.9,0.98"}

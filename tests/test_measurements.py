"""Per-step measurements against plain float64 references on tiny models.

The reference loads interpolated weights into a copy of the model with ``vector_to_parameters`` and
evaluates the probe set chunk by chunk with BatchNorm on batch statistics (the probe semantics),
independently of the engine's flat-buffer evaluator.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from sgdwalk.batches import make_chunks
from sgdwalk.config import build_config
from sgdwalk.landscape import analyze_slice
from sgdwalk.probe import Evaluator, flat_params, set_probe_mode
from sgdwalk.records import EpochEnded, StepMeasured
from sgdwalk.slicing import Slicer
from sgdwalk.train import prepare

TOL = 1e-10  # float64 against float64: a stray float32 cast (about 1e-7) fails it


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def reference_loss(model: nn.Module, theta: torch.Tensor, chunks) -> float:
    m = copy.deepcopy(model)
    vector_to_parameters(theta, m.parameters())
    set_probe_mode(m)
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in chunks:
            total += nn.functional.cross_entropy(m(x), y, reduction="sum").item()
            n += len(y)
    return total / n


def _tiny_run(**flags):
    base = {"epochs": 2, "train_size": 120, "batch_size": "16", "probe": "48", "probe_chunk": 16,
            "points": 4, "hessian_every": "off", "lr": 0.5}  # fmt: skip
    return prepare(build_config(base | flags))


def _walk(run, n_steps):
    """Step records and θ_0..θ_n as the model holds them between records (the generator is lazy)."""
    thetas = [flat_params(run.model)]
    steps = []
    for rec in run.records():
        if isinstance(rec, StepMeasured):
            steps.append(rec)
            thetas.append(flat_params(run.model))
            if len(steps) == n_steps:
                break
    return steps, thetas


@pytest.mark.parametrize("slice_mode", ["loop", "vmap"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_slices_and_trajectory_match_a_plain_reference(float64, batchnorm, slice_mode):
    run = _tiny_run(batchnorm=batchnorm, slice_mode=slice_mode)
    assert run.evaluator.flat.dtype == torch.float64
    assert run.instrument.slicer.mode == slice_mode
    steps, thetas = _walk(run, 9)  # crosses the epoch boundary (8 steps per epoch)
    chunks = run.probe.whole
    for t, rec in enumerate(steps):
        th0, th1 = thetas[t], thetas[t + 1]
        ref = [reference_loss(run.model, th0 + a * (th1 - th0), chunks) for a in rec.alphas]
        ref[-1] = reference_loss(run.model, th1, chunks)
        assert rec.slice == pytest.approx(ref, rel=TOL, abs=1e-12)
        expect = analyze_slice(rec.slice, rec.alphas)
        assert (rec.barrier, rec.interior_min, rec.floor_alpha) == (
            expect.barrier, expect.interior_min, expect.floor_alpha)  # fmt: skip
        delta = th1 - th0
        assert rec.step_norm == pytest.approx(delta.norm().item(), rel=TOL)
        assert rec.dist_from_init == pytest.approx((th1 - thetas[0]).norm().item(), rel=TOL)
        # plain SGD, no momentum or decay: Δ_t = −lr g_t, so ‖g‖ = ‖Δ‖/lr and both cosines agree
        assert rec.grad_norm == pytest.approx(delta.norm().item() / 0.5, rel=TOL)
        if t == 0:
            assert rec.grad_cos is None and rec.update_cos is None
        else:
            prev = thetas[t] - thetas[t - 1]
            cos = (torch.dot(prev, delta) / (prev.norm() * delta.norm())).item()
            assert rec.update_cos == pytest.approx(cos, rel=TOL, abs=1e-12)
            assert rec.grad_cos == pytest.approx(cos, rel=TOL, abs=1e-12)


def test_endpoint_reuse_is_exact(float64):
    run = _tiny_run(slice_mode="loop")
    steps, thetas = _walk(run, 5)
    for prev, rec in zip(steps, steps[1:], strict=False):
        assert rec.slice[0] == prev.slice[-1]  # L_0 of step t is L_K of step t−1, reused
    fresh = Evaluator(run.model)
    fresh.load(thetas[3])
    assert fresh.loss(run.probe.whole).item() == steps[3].slice[0]


def test_vmapped_slice_reuses_its_endpoint_and_matches_the_loop(float64):
    run = _tiny_run(slice_mode="vmap", batchnorm=True)
    steps, thetas = _walk(run, 5)
    for prev, rec in zip(steps, steps[1:], strict=False):
        assert rec.slice[0] == prev.slice[-1]
    looped = Slicer(Evaluator(run.model), "loop")
    for t in (0, 3):
        expect = looped.losses(
            thetas[t], thetas[t + 1], run.instrument.meter.alphas, run.probe.whole
        )
        assert steps[t].slice == pytest.approx(expect.tolist(), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_vmapped_slice_of_a_convolutional_net_matches_the_reference(float64, batchnorm):
    """Convolutions and BatchNorm2d under vmap: each α point its own batch statistics."""
    g = torch.Generator().manual_seed(3)
    layers = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
              nn.Linear(4 * 6 * 6, 3)]  # fmt: skip
    model = nn.Sequential(*(m for m in layers if batchnorm or not isinstance(m, nn.BatchNorm2d)))
    x, y = torch.randn(20, 2, 6, 6, generator=g), torch.randint(0, 3, (20,), generator=g)
    chunks = make_chunks(x, y, 8)  # uneven: 8, 8, 4
    theta0 = flat_params(model)
    theta1 = theta0 + 0.2 * torch.randn(theta0.shape, generator=g)
    alphas = [j / 6 for j in range(7)]
    got = Slicer(Evaluator(model), "vmap").losses(theta0, theta1, alphas, chunks)
    ref = [reference_loss(model, theta0 + a * (theta1 - theta0), chunks) for a in alphas]
    ref[-1] = reference_loss(model, theta1, chunks)
    assert got.tolist() == pytest.approx(ref, rel=TOL)


@pytest.mark.parametrize("shortcut", [False, True])
@pytest.mark.parametrize("budget", ["VMAP_PARAM_BYTES", "VMAP_ACTIVATION_BYTES"])
def test_vmapped_slice_splits_points_that_would_not_fit(float64, monkeypatch, budget, shortcut):
    """8 points in passes of 3 (with the first-layer shortcut the ends are plain passes: 7)."""
    from sgdwalk import slicing

    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
    g = torch.Generator().manual_seed(4)
    chunks = make_chunks(
        torch.randn(12, 5, generator=g), torch.randint(0, 2, (12,), generator=g), 5
    )
    theta0 = flat_params(model)
    theta1 = theta0 + 0.3 * torch.randn(theta0.shape, generator=g)
    alphas = [j / 8 for j in range(9)]
    whole = Slicer(Evaluator(model), "vmap").losses(theta0, theta1, alphas, chunks)
    calls = []
    original = slicing.BatchedLosses.losses_at
    per_point = {"VMAP_PARAM_BYTES": theta0.numel(), "VMAP_ACTIVATION_BYTES": 5 * (7 + 7 + 2)}
    monkeypatch.setattr(slicing, budget, 3 * per_point[budget] * 8)  # 3 points a pass
    monkeypatch.setattr(
        slicing.BatchedLosses,
        "losses_at",
        lambda self, th, *rest: (calls.append(len(th)), original(self, th, *rest))[1],
    )
    ev = Slicer(Evaluator(model), "vmap")
    ev.use_shortcut = shortcut
    split = ev.losses(theta0, theta1, alphas, chunks)
    assert calls == ([3, 3, 1] if shortcut else [3, 3, 3])
    assert split.tolist() == pytest.approx(whole.tolist(), rel=1e-12)


def test_measure_every_keeps_training_fields_only_on_unmeasured_steps(float64):
    run = _tiny_run(measure_every=3, epochs=1)
    steps, thetas = _walk(run, 7)
    assert [r.measured for r in steps] == [True, False, False, True, False, False, True]
    plain = steps[1]
    assert plain.slice is None and plain.barrier is None and plain.grad_norm is None
    assert math.isfinite(plain.batch_loss)
    rec = steps[3]  # measured after unmeasured: L_0 evaluated afresh, cosines from step 3
    ref0 = reference_loss(run.model, thetas[3], run.probe.whole)
    assert rec.slice[0] == pytest.approx(ref0, rel=TOL)
    prev, delta = thetas[3] - thetas[2], thetas[4] - thetas[3]
    cos = (torch.dot(prev, delta) / (prev.norm() * delta.norm())).item()
    assert rec.update_cos == pytest.approx(cos, rel=TOL)


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [16] * 7 + [8]), (True, [16] * 7)])
def test_drop_last_leaves_out_the_short_batch(drop_last, sizes):
    run = _tiny_run(drop_last=drop_last, measure_every=1000)  # 120 examples, batches of 16
    assert run.steps_per_epoch == len(sizes) and run.info["total_steps"] == 2 * len(sizes)
    recs = list(run.records())
    steps = [r for r in recs if isinstance(r, StepMeasured)]
    assert [r.batch_size for r in steps] == sizes * 2
    assert [e.steps for e in recs if isinstance(e, EpochEnded)] == [len(sizes), 2 * len(sizes)]


def test_probe_batch_uses_the_steps_own_batch(float64):
    run = _tiny_run(probe="batch", epochs=1)
    steps, _ = _walk(run, 3)
    for rec in steps:
        assert len(rec.slice) == 5 and all(math.isfinite(v) for v in rec.slice)
    assert run.info["probe_size"] is None


def test_full_batch_gd_matches_one_big_gradient(float64):
    run = _tiny_run(batch_size="full", batchnorm=False, epochs=2)
    model0 = copy.deepcopy(run.model)
    steps, thetas = _walk(run, 1)
    x, y = run.data.inputs(slice(None)), run.data.y_train
    loss = nn.functional.cross_entropy(model0(x), y)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model0.parameters()))])
    assert steps[0].batch_size == 120
    assert steps[0].batch_loss == pytest.approx(loss.item(), rel=TOL)
    assert (thetas[1] - thetas[0]).tolist() == pytest.approx(
        (-0.5 * grad).tolist(), rel=TOL, abs=1e-14
    )


def test_epoch_summary_counts_barriers_and_interior_minima(float64):
    run = _tiny_run(epochs=1, lr=3.0)
    recs = list(run.records())
    steps = [r for r in recs if isinstance(r, StepMeasured)]
    (epoch,) = [r for r in recs if isinstance(r, EpochEnded)]
    assert epoch.steps == len(steps) == 8
    assert epoch.barriers == sum(r.barrier for r in steps)
    assert epoch.interior_min_fraction == pytest.approx(sum(r.interior_min for r in steps) / 8)
    assert epoch.train_loss == pytest.approx(steps[-1].slice[-1], rel=TOL)
    assert 0.0 <= epoch.train_acc <= 1.0 and 0.0 <= epoch.val_acc <= 1.0


@pytest.mark.parametrize("slice_mode", ["loop", "vmap"])
def test_measuring_leaves_the_model_exactly_as_it_was(slice_mode):
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(8, 3))  # fmt: skip
    model.train()
    model[3].eval()  # an unusual mode mix must survive too
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    chunks = make_chunks(x, y, 8)
    ev = Evaluator(model)
    theta = flat_params(model)
    Slicer(ev, slice_mode).losses(theta, theta + 0.1, [0, 0.25, 0.5, 0.75, 1.0], chunks)
    ev.sync_buffers(model)
    ev.loss_and_accuracy(chunks, eval_mode=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


def test_determinism_same_seed_same_records():
    def records():
        # the thread count is part of the seed: float sums split differently over threads, and
        # the automatic choice follows the machine's load (another test beside this one); so
        # does ``--slice-mode auto`` (loop and vmap round differently in the last bits)
        run = _tiny_run(epochs=1, threads=1, slice_mode="loop")
        return [r for r in run.records()]

    def strip(r):
        return r.__class__(**{**{f: getattr(r, f) for f in r.__slots__}, **(
            {"elapsed": 0.0} if isinstance(r, StepMeasured) else {"time": 0.0}
            if hasattr(r, "time") else {})})  # fmt: skip

    a, b = records(), records()
    assert [strip(r) for r in a] == [strip(r) for r in b]


@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg11", "resnet56", "wrn"])
def test_every_model_takes_the_vmapped_slice(name):
    """What CUDA runs by default (``auto``), checked here on a CPU against the looped slice."""
    from sgdwalk.models import build_model

    torch.manual_seed(0)
    model = build_model(name, (3, 32, 32), 10, batchnorm=True, wrn_depth=10, wrn_width=1).double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    chunks = make_chunks(x, torch.randint(0, 10, (6,), generator=g), 3)
    theta0 = flat_params(model)
    theta1 = theta0 + 1e-2 * torch.randn(theta0.shape, generator=g, dtype=torch.float64)
    alphas = [0.0, 0.5, 1.0]
    looped = Slicer(Evaluator(model), "loop").losses(theta0, theta1, alphas, chunks)
    batched = Slicer(Evaluator(model), "vmap").losses(theta0, theta1, alphas, chunks)
    assert batched.tolist() == pytest.approx(looped.tolist(), rel=1e-9)

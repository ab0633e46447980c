"""sgdwalk.Walker on users' own loops: exact slices, an untouched model, and what real loops do
(gradient accumulation, GradScaler skips, schedulers, DDP/compile wrappers, BatchNorm, dict
batches, Datasets and DataLoaders, a time budget)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sgdwalk
from sgdwalk.records import FINISHED, INTERRUPTED, SKIPPED_EVENT
from sgdwalk.session import open_session

TOL = 1e-10  # float64 against float64


def data(n: int = 96, d: int = 6, classes: int = 3, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def mlp(d: int = 6, classes: int = 3, dtype=torch.float32, bn: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    layers = [nn.Linear(d, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(),
                                                                         nn.Linear(8, classes)]  # fmt: skip
    return nn.Sequential(*layers).to(dtype)


def train(model, opt, x, y, steps: int, batch: int = 16, walker=None, accumulate: int = 1,
          scheduler=None):  # fmt: skip
    """A plain loop: the user's code, with the Walker's one optional line (report)."""
    n = len(x)
    for i in range(steps):
        for j in range(accumulate):
            k = (i * accumulate + j) * batch % n
            xb, yb = x[k : k + batch], y[k : k + batch]
            loss = nn.functional.cross_entropy(model(xb), yb) / accumulate
            loss.backward()
            if walker is not None:
                walker.report(loss * accumulate, len(xb))
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()


def steps_of(tmp_path, name):
    with open_session(tmp_path / name) as s:
        return list(s.steps()), list(s.events()), s.status, s.config, s.info


def test_two_lines_measure_every_step_exactly_in_float64(tmp_path):
    x, y = data(dtype=torch.float64)
    model = mlp(dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    thetas = []
    with sgdwalk.Walker(model, (x, y), session="w", sessions_dir=tmp_path, points=4,
                        budget=None) as walker:  # every step, to check each one  # fmt: skip
        walker.attach(opt)
        opt.register_step_pre_hook(lambda *_: thetas.append(copy.deepcopy(model)))
        train(model, opt, x, y, steps=6, walker=walker)
        thetas.append(copy.deepcopy(model))
    steps, events, status, config, info = steps_of(tmp_path, "w")
    assert status == FINISHED and [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert config["optimizer"] == "SGD" and config["optimizer_params"]["momentum"] == 0.9
    assert config["model"] == "Sequential" and info["params"] == 6 * 8 + 8 + 8 * 3 + 3
    for rec, before, after in zip(steps, thetas, thetas[1:], strict=False):
        p0 = torch.nn.utils.parameters_to_vector(before.parameters())
        p1 = torch.nn.utils.parameters_to_vector(after.parameters())
        for alpha, got in zip(rec.alphas, rec.slice, strict=True):
            probe = copy.deepcopy(before)
            torch.nn.utils.vector_to_parameters(p0 + alpha * (p1 - p0), probe.parameters())
            want = nn.functional.cross_entropy(probe(x), y).item()
            assert abs(got - want) <= TOL * max(1.0, abs(want))
        assert abs(rec.step_norm - (p1 - p0).norm().item()) <= TOL
    assert all(math.isfinite(s.batch_loss) for s in steps)


def test_the_users_training_is_unchanged(tmp_path):
    """Parameters, BatchNorm buffers, train/eval mode and the RNG are as without the Walker."""
    x, y = data()
    runs = []
    for use in (False, True):
        model = mlp(bn=True)
        model.add_module("drop", nn.Dropout(0.5))  # uses the RNG in training
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(123)
        walker = None
        if use:
            walker = sgdwalk.Walker(model, (x, y), session="u", sessions_dir=tmp_path,
                                    hessian_every=3, top_k=2, budget=None)  # fmt: skip
            walker.attach(opt)
        train(model, opt, x, y, steps=7, walker=walker)
        rng_after = torch.rand(3)
        if walker is not None:
            walker.close()
        runs.append((model.state_dict(), model.training, rng_after))
    (a, mode_a, rng_a), (b, mode_b, rng_b) = runs
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert mode_a == mode_b and torch.equal(rng_a, rng_b)
    with open_session(tmp_path / "u") as s:
        assert [c.step for c in s.curvature()] == [0, 3, 6]


def test_gradient_accumulation_is_one_step_with_the_accumulated_gradient(tmp_path):
    x, y = data(dtype=torch.float64)
    model = mlp(dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    norms = []
    opt.register_step_pre_hook(lambda *_: norms.append(
        torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm().item()))  # fmt: skip
    with sgdwalk.Walker(model, (x, y), session="acc", sessions_dir=tmp_path, budget=None) as walker:
        walker.attach(opt)
        train(model, opt, x, y, steps=5, batch=8, accumulate=4, walker=walker)
    steps = steps_of(tmp_path, "acc")[0]
    assert len(steps) == 5
    assert [s.grad_norm for s in steps] == pytest.approx(norms, abs=TOL)
    assert all(s.batch_size == 32 for s in steps)  # the accumulated batch: 4 reports of 8


def test_a_scheduler_s_lr_is_recorded_per_step(tmp_path):
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    with sgdwalk.Walker(model, (x, y), session="lr", sessions_dir=tmp_path, budget=None) as walker:
        walker.attach(opt)
        train(model, opt, x, y, steps=6, scheduler=sched)
    assert [s.lr for s in steps_of(tmp_path, "lr")[0]] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_a_step_the_grad_scaler_skips_is_recorded_as_skipped(tmp_path):
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    with sgdwalk.Walker(model, (x, y), session="amp", sessions_dir=tmp_path,
                        budget=None) as walker:  # fmt: skip
        walker.attach(opt, scaler)
        for i in range(6):
            loss = nn.functional.cross_entropy(model(x[:16]), y[:16])
            scaler.scale(loss).backward()
            if i == 3:
                next(model.parameters()).grad[0, 0] = float("inf")  # an overflow
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    steps, events, *_ = steps_of(tmp_path, "amp")
    assert [s.step for s in steps] == [1, 2, 3, 4, 5]  # five updates taken
    skipped = [e for e in events if e.kind == SKIPPED_EVENT]
    assert len(skipped) == 1 and skipped[0].step == 3 and "skipped" in skipped[0].message
    assert all(s.step_norm > 0 for s in steps)  # no zero move measured
    # gradients reach the Walker unscaled: the norm is that of the true gradient, not 16x
    assert all(s.grad_norm < 10 for s in steps)


def test_wrapped_models_are_measured_on_their_eager_module(tmp_path):
    x, y = data()
    model = mlp()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with sgdwalk.Walker(
        compiled, (x, y), session="c", sessions_dir=tmp_path, budget=None
    ) as walker:
        assert walker.module is model
        assert type(walker.evaluator.shadow) is nn.Sequential
        walker.attach(opt)
        for _ in range(3):
            nn.functional.cross_entropy(compiled(x[:16]), y[:16]).backward()
            opt.step()
            opt.zero_grad()
    assert len(steps_of(tmp_path, "c")[0]) == 3


def test_ddp_is_unwrapped(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        model = mlp()
        ddp = nn.parallel.DistributedDataParallel(model)
        x, y = data()
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        with sgdwalk.Walker(ddp, (x, y), session="d", sessions_dir=tmp_path, budget=None) as walker:
            assert walker.module is model
            walker.attach(opt)
            for _ in range(2):
                nn.functional.cross_entropy(ddp(x[:16]), y[:16]).backward()
                opt.step()
                opt.zero_grad()
        del walker, ddp  # no DDP module left for interpreter exit (see README, torchrun)
    finally:
        dist.destroy_process_group()
    assert len(steps_of(tmp_path, "d")[0]) == 2


class DictModel(nn.Module):
    """A model that takes a dict and returns its own loss, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, features, labels=None):
        logits = self.net(features)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return {"logits": logits, "loss": loss}


def test_dict_batches_a_loss_fn_and_a_dataloader_probe(tmp_path):
    x, y = data()
    batches = [{"features": x[i : i + 16], "labels": y[i : i + 16]} for i in range(0, 96, 16)]
    model = DictModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(m, batch):
        return m(**batch)["loss"]

    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    walker = sgdwalk.Walker(model, [{"features": b["features"], "labels": b["labels"]}
                                    for b in batches][0], loss_fn, session="dict",
                            sessions_dir=tmp_path, budget=None)  # fmt: skip
    assert walker.probe.size == 16
    walker.attach(opt)
    for b in batches:
        model(**b)["loss"].backward()  # the Walker takes the loss the model returned
        opt.step()
        opt.zero_grad()
    walker.close()
    steps = steps_of(tmp_path, "dict")[0]
    assert len(steps) == 6 and all(math.isfinite(s.batch_loss) for s in steps)
    want = nn.functional.cross_entropy(mlp()(x[:16]), y[:16]).item()  # θ_0 is mlp()'s
    assert steps[0].slice[0] == pytest.approx(want, abs=1e-6)
    assert walker.probe.chunk == 1024  # no BatchNorm, small layer outputs: the largest chunk
    # a DataLoader probe: its first N examples; a Dataset probe: the same
    for probe in (loader, TensorDataset(x, y)):
        w = sgdwalk.Walker(
            mlp(), probe, session=None, sessions_dir=tmp_path, probe_size=25, budget=None
        )
        assert w.probe.size == 25 and torch.equal(torch.cat([c[0] for c in w.probe.chunks]), x[:25])
        w.close()


def test_a_budget_measures_every_nth_step(tmp_path):
    x, y = data(n=2000)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    # 50 probe passes of 2000 examples a step cost far more than a step on 4 examples does
    with sgdwalk.Walker(model, (x, y), session="b", sessions_dir=tmp_path, points=50,
                        budget=0.5) as walker:  # fmt: skip
        walker.attach(opt)
        train(model, opt, x, y, steps=60, batch=4)
    steps = steps_of(tmp_path, "b")[0]
    measured = [s.step for s in steps if s.measured]
    assert len(steps) == 60 and 1 in measured and len(measured) < 30


def test_bad_arguments_are_one_config_error(tmp_path):
    x, y = data()
    for kwargs, words in [({"points": 0}, "points"), ({"budget": -1}, "budget"),
                          ({"hessian_every": "2"}, "counts steps"),
                          ({"session": "../x"}, "session")]:  # fmt: skip
        with pytest.raises(sgdwalk.SgdwalkError, match=words):
            sgdwalk.Walker(mlp(), (x, y), **({"sessions_dir": tmp_path, "budget": None} | kwargs))
    with pytest.raises(sgdwalk.ConfigError, match="probe"):
        sgdwalk.Walker(mlp(), object(), sessions_dir=tmp_path, budget=None)


def test_an_exception_in_the_loop_ends_the_session_failed_or_interrupted(tmp_path):
    x, y = data()
    for name, error, status in (("f", ValueError("boom"), "failed"),
                                ("i", KeyboardInterrupt(), INTERRUPTED)):  # fmt: skip
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(type(error)), sgdwalk.Walker(model, (x, y), session=name,
                                                        sessions_dir=tmp_path, budget=None) as walker:  # fmt: skip
            walker.attach(opt)
            train(model, opt, x, y, steps=2)
            raise error
        steps, events, got, *_ = steps_of(tmp_path, name)
        assert got == status and len(steps) == 2 and events[-1].kind == status


def test_a_plain_loop_with_the_walker_gives_the_numbers_of_sgdwalk_run(tmp_path):
    """One measurement path: the digits MLP, same seed, batches and probe, in a user's loop."""
    from sgdwalk.config import build_config
    from sgdwalk.train import prepare
    from sgdwalk.tui.cli import main

    flags = ["--epochs", "1", "--hessian-every", "off", "--sessions-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as done:
        main(["run", "--headless", "--session", "ref", *flags])
    assert done.value.code == 0
    cfg = build_config({"epochs": 1, "hessian_every": "off", "sessions_dir": str(tmp_path)}, None)
    run = prepare(cfg)  # the same data and the same seeded model, built the way `run` builds it
    data, model = run.data, run.model
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)  # fmt: skip
    probe = (data.inputs(run.probe.rows), data.y_train[run.probe.rows])
    gen = torch.Generator().manual_seed(cfg.seed)
    with sgdwalk.Walker(
        model,
        probe,
        session="mine",
        sessions_dir=tmp_path,
        batch_size=run.batch_size,
        budget=None,  # every step, as `run` measures the digits default
    ) as walker:  # BatchNorm: chunks of 64
        walker.attach(opt)
        for idx in torch.split(torch.randperm(data.n_train, generator=gen), run.batch_size):
            loss = nn.functional.cross_entropy(model(data.train_batch(idx, gen)), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            walker.report(loss)
            opt.step()
    ref, mine = steps_of(tmp_path, "ref")[0], steps_of(tmp_path, "mine")[0]
    assert len(ref) == len(mine) == run.steps_per_epoch
    for a, b in zip(ref, mine, strict=True):
        assert b.slice == pytest.approx(a.slice, rel=1e-6)
        for field in ("batch_loss", "grad_norm", "step_norm", "dist_from_init", "floor_alpha"):
            assert getattr(b, field) == pytest.approx(getattr(a, field), rel=1e-6), field
        assert (a.grad_cos is None) == (b.grad_cos is None) and a.barrier == b.barrier
        assert (a.step, a.lr, a.batch_size) == (b.step, b.lr, b.batch_size)


def test_without_batchnorm_the_probe_chunk_fits_the_cpu_caches(tmp_path):
    """A CNN's large layer outputs: chunks of 64 (what ``sgdwalk run`` takes too); ``chunk=``
    wins."""
    from sgdwalk.models import cnn

    model = cnn((3, 32, 32), 10)
    x, y = torch.randn(130, 3, 32, 32), torch.randint(0, 10, (130,))
    for chunk, want in ((None, 64), (100, 100)):
        w = sgdwalk.Walker(
            model, (x, y), session=None, sessions_dir=tmp_path, chunk=chunk, budget=None
        )
        sizes = [len(c[1]) for c in w.probe.chunks]
        assert w.probe.chunk == want and sizes[:-1] == [want] * (130 // want) and sum(sizes) == 130
        w.close()

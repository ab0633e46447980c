"""sgdwalk's scalars in TensorBoard, W&B and trackio, read back with each one's own reader."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from canned import canned_records

from sgdwalk.errors import ConfigError
from sgdwalk.trackers import Trackers, parse_targets, scalars

RECORDS = list(canned_records(epochs=2))


def test_the_scalars_of_each_record_kind():
    step = next(r for r in RECORDS if type(r).__name__ == "StepMeasured" and r.step == 3)
    at, values = scalars(step)
    assert at == 3 and values["slice/loss"] == step.slice[0]
    assert values["slice/interior_min"] in (0.0, 1.0) and "walk/grad_cos" in values
    epoch = next(r for r in RECORDS if type(r).__name__ == "EpochEnded")
    at, values = scalars(epoch)
    assert (
        at == epoch.steps and values["epoch/interior_min_fraction"] == epoch.interior_min_fraction
    )
    pass_ = next(r for r in RECORDS if type(r).__name__ == "CurvatureMeasured")
    at, values = scalars(pass_)
    assert values["curvature/lambda1"] == pass_.eigenvalues[0]
    assert "alignment/subspace_b100" in values and "curvature/edge_ratio" not in values  # None


def test_bad_targets_are_one_line():
    assert parse_targets("tensorboard:runs/a, wandb") == [("tensorboard", "runs/a"), ("wandb", "")]
    for spec, words in (("mlflow", "unknown tracker"), ("tensorboard", "needs a folder")):
        with pytest.raises(ConfigError, match=words):
            parse_targets(spec)


def test_tensorboard_events_open_in_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trackers = Trackers(f"tensorboard:{tmp_path / 'tb'}")
    for rec in RECORDS:
        trackers.record(rec)
    trackers.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/batch_loss", "slice/loss", "slice/barrier", "epoch/interior_min_fraction",
            "curvature/lambda1", "alignment/subspace_b1000"} <= tags  # fmt: skip
    losses = acc.Scalars("train/batch_loss")
    assert [e.step for e in losses] == list(range(1, 49))
    assert len(acc.Scalars("epoch/barriers")) == 2


def test_wandb_logs_to_the_scripts_active_run(tmp_path):
    pytest.importorskip("wandb")
    code = textwrap.dedent(f"""
        import json, sys, wandb
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from canned import canned_records
        from sgdwalk.trackers import Trackers
        try:
            Trackers("wandb")
        except Exception as e:
            print("refused:", e)
        run = wandb.init(project="t", dir={str(tmp_path)!r}, mode="offline")
        t = Trackers("wandb")
        for rec in canned_records(epochs=1):
            t.record(rec)
        t.close()
        print(json.dumps({{k: run.summary[k] for k in ("slice/loss", "epoch/barriers")}}))
        run.finish()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ | {"WANDB_SILENT": "true"}, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused: log_to wandb: no active W&B run")
    assert '"epoch/barriers"' in lines[-1]


def test_trackio_runs_hold_the_scalars(tmp_path):
    pytest.importorskip("trackio")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from canned import canned_records
        from sgdwalk.trackers import Trackers
        t = Trackers("trackio:sgdwalk-test", name="r1")
        for rec in canned_records(epochs=1):
            t.record(rec)
        t.close()
    """)
    env = os.environ | {"TRACKIO_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    import sqlite3

    dbs = list(tmp_path.rglob("*.db"))
    assert dbs, list(tmp_path.rglob("*"))
    text = ""
    for db in dbs:
        con = sqlite3.connect(db)
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            text += " ".join(str(r) for r in con.execute(f"SELECT * FROM {name}"))
        con.close()
    assert "slice/loss" in text and "epoch/interior_min_fraction" in text


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_run_log_to_tensorboard_holds_every_step_of_the_session(tmp_path):
    pytest.importorskip("tensorboard")
    from canned import run_cli

    from sgdwalk import open_session

    code, out, err = run_cli(
        "run", "--headless", "--epochs", "2", "--hessian-every", "1", "--top-k", "2",
        "--train-size", "128", "--sessions-dir", str(tmp_path), "--session", "tb",
        "--log-to", f"tensorboard:{tmp_path / 'tb'}",
    )  # fmt: skip
    assert code == 0, err
    acc = _events(tmp_path / "tb")
    assert {"train/batch_loss", "slice/loss", "slice/barrier", "walk/step_norm",
            "epoch/interior_min_fraction", "epoch/barriers",
            "curvature/lambda1"} <= set(acc.Tags()["scalars"])  # fmt: skip
    with open_session(tmp_path / "tb") as s:
        steps = list(s.steps())
        epochs = list(s.epochs())
        assert s.config["log_to"] == f"tensorboard:{tmp_path / 'tb'}"
    assert [e.step for e in acc.Scalars("train/batch_loss")] == [r.step for r in steps]
    got = [e.value for e in acc.Scalars("epoch/interior_min_fraction")]
    assert got == pytest.approx([e.interior_min_fraction for e in epochs])


def test_a_tracker_that_cannot_write_is_one_warning_and_the_run_finishes(tmp_path):
    pytest.importorskip("tensorboard")
    from canned import run_cli

    (tmp_path / "file").write_text("")  # a folder cannot be made under a file
    code, out, err = run_cli(
        "run", "--headless", "--epochs", "1", "--hessian-every", "off", "--train-size", "128",
        "--sessions-dir", str(tmp_path), "--session", "w",
        "--log-to", f"tensorboard:{tmp_path / 'file' / 'tb'}",
    )  # fmt: skip
    assert code == 0, err
    warnings = [line for line in out.splitlines() if "not logging to tensorboard" in line]
    assert len(warnings) == 1 and "training goes on" in warnings[0]


def test_a_failing_tracker_is_dropped_with_one_warning():
    said = []
    trackers = Trackers(None, warn=said.append)

    class Broken:  # a tracker whose service went away mid-run
        kind = "tensorboard"

        def log(self, step, values):
            raise OSError("disk full")

        def close(self):
            raise OSError("disk full")

    trackers.targets.append(Broken())
    for rec in RECORDS:
        trackers.record(rec)
    trackers.close()
    assert said == ["tensorboard failed, no more logging to it, training goes on: "
                    "OSError: disk full"]  # fmt: skip


def test_log_to_is_checked_where_it_is_given(tmp_path):
    from canned import run_cli

    code, _, err = run_cli("run", "--headless", "--log-to", "mlflow:x")
    assert code == 2 and err.strip() == (
        "sgdwalk: error: --log-to: unknown tracker 'mlflow'; use tensorboard:DIR, "
        "wandb[:PROJECT] or trackio[:PROJECT]"
    )
    import torch

    from sgdwalk import Walker

    model = torch.nn.Linear(4, 2)
    probe = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(ConfigError, match="^Walker: log_to: tensorboard needs a folder"):
        Walker(model, probe, sessions_dir=tmp_path, log_to="tensorboard")
    assert not list(tmp_path.iterdir())  # nothing claimed


def test_a_walker_loop_logs_its_records_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    import torch

    from sgdwalk import Walker, open_session

    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    walker = Walker(model, (x, y), session="w", sessions_dir=tmp_path, budget=None,
                    hessian_every=5, top_k=2, log_to=[f"tensorboard:{tmp_path / 'tb'}"])  # fmt: skip
    walker.attach(opt)
    for epoch in (1, 2):
        walker.epoch = epoch
        for i in range(0, 64, 16):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
            opt.zero_grad()
            loss.backward()
            walker.report(loss, 16)
            opt.step()
    walker.close()
    acc = _events(tmp_path / "tb")
    with open_session(tmp_path / "w") as s:
        steps = list(s.steps())
        assert s.status == "finished"
    assert [r.step for r in steps] == list(range(1, 9))
    assert [e.step for e in acc.Scalars("slice/loss")] == [r.step for r in steps]
    assert [e.step for e in acc.Scalars("epoch/barriers")] == [4, 8]
    assert [e.step for e in acc.Scalars("curvature/lambda1")] == [0, 5]

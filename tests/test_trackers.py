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

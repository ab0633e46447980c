"""The Walker under torchrun (CPU, gloo, two processes): the probe sharded by index range, one
session written by rank 0, the same numbers as one process, and no hang when a rank dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from canned import HANG

from sgdwalk.session import list_sessions, open_session

pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys, time
import torch
import torch.distributed as dist
from torch import nn
import sgdwalk

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
__import__("pathlib").Path(sys.argv[1], f"pid{{rank}}").write_text(str(os.getpid()))
torch.manual_seed(0)
x = torch.randn(256, 6, dtype=torch.float64)
y = torch.randint(0, 3, (256,))
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.2)
walker = sgdwalk.Walker(ddp, (x[:{probe}], y[:{probe}]), session="d", sessions_dir=sys.argv[1],
                        hessian_every=4, top_k=3, batch_size=32, decompose=True, budget=None)
walker.attach(opt)
for step in range({steps}):
    k = step * 32 % 256
    mine = slice(k + 32 * rank // world, k + 32 * (rank + 1) // world)  # the global batch, split
    loss = nn.functional.cross_entropy(ddp(x[mine]), y[mine])
    opt.zero_grad()
    loss.backward()
    walker.report(loss)
    opt.step()
walker.close()
del walker, ddp  # a DDP module alive at interpreter exit can abort the rank (torch, gloo)
__import__("gc").collect()
dist.destroy_process_group()
"""


def torchrun(tmp_path: Path, nproc: int, probe: int = 101, steps: int = 8, **kw):
    folder = tmp_path / f"n{nproc}"
    folder.mkdir()
    script = folder / "train.py"
    script.write_text(textwrap.dedent(SCRIPT).format(probe=probe, steps=steps))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", str(script), str(folder)]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return folder, argv, env


def test_two_ranks_write_one_session_with_the_numbers_of_one(tmp_path):
    runs = {}
    for nproc in (1, 2):
        folder, argv, env = torchrun(tmp_path, nproc)  # 101 probe rows: shards of 50 and 51
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=HANG)
        assert out.returncode == 0, out.stderr[-3000:]
        good, bad = list_sessions(folder)
        assert not bad and [s.name for s in good] == ["d"]  # rank 0 alone wrote
        with open_session(folder / "d") as s:
            runs[nproc] = (list(s.steps()), list(s.curvature()), s.info["world_size"])
    (one, curv1, w1), (two, curv2, w2) = runs[1], runs[2]
    assert (w1, w2) == (1, 2) and len(one) == len(two) == 8
    for a, b in zip(one, two, strict=True):
        assert b.slice == pytest.approx(a.slice, rel=1e-10)
        assert (a.barrier, a.floor_alpha) == (b.barrier, b.floor_alpha)
        assert b.grad_norm == pytest.approx(a.grad_norm, rel=1e-10)
        assert (b.dominant_loss, b.bulk_loss) == pytest.approx((a.dominant_loss, a.bulk_loss),
                                                                rel=1e-8)  # fmt: skip
        assert b.basis_step == a.basis_step
    assert [c.step for c in curv1] == [c.step for c in curv2] == [0, 4, 8]
    for a, b in zip(curv1, curv2, strict=True):
        assert b.eigenvalues == pytest.approx(a.eigenvalues, rel=1e-8)
        for x, y in zip(a.alignment, b.alignment, strict=True):
            assert y.subspace_mean == pytest.approx(x.subspace_mean, rel=1e-8)


def test_a_rank_that_dies_ends_the_run_without_a_hang(tmp_path):
    folder, argv, env = torchrun(tmp_path, 2, steps=10**6)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + HANG
    while True:
        assert time.monotonic() < deadline and proc.poll() is None
        try:
            with open_session(folder / "d") as s:
                if s.step_count() >= 5:
                    break
        except Exception:  # noqa: BLE001 - not there yet
            pass
        time.sleep(0.05)
    pids = [int((folder / f"pid{r}").read_text()) for r in (0, 1)]
    os.kill(pids[1], signal.SIGKILL)
    proc.wait(timeout=HANG)
    assert proc.returncode != 0
    with open_session(folder / "d") as s:
        assert s.status in ("interrupted", "failed") and s.step_count() >= 5
    con = sqlite3.connect(f"file:{folder / 'd' / 'session.sqlite'}?mode=ro", uri=True)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    for pid in pids:  # nothing left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sgdwalk.tui.cli", *args], capture_output=True,
                          text=True, timeout=HANG, **kw)  # fmt: skip


def test_run_nproc_2_writes_the_numbers_of_nproc_1(tmp_path):
    common = ["run", "--headless", "--epochs", "1", "--no-batchnorm", "--hessian-every", "12s",
              "--top-k", "4", "--sessions-dir", str(tmp_path)]  # fmt: skip
    for n in ("1", "2"):
        out = cli(*common, "--nproc", n, "--session", f"n{n}")
        assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("sgdwalk: session") == 1  # rank 0 alone prints
    good, bad = list_sessions(tmp_path)
    assert not bad and sorted(s.name for s in good) == ["n1", "n2"]
    with open_session(tmp_path / "n1") as a, open_session(tmp_path / "n2") as b:
        assert (a.info["world_size"], b.info["world_size"], b.config["nproc"]) == (1, 2, 2)
        for x, y in zip(a.steps(), b.steps(), strict=True):
            assert y.slice == pytest.approx(x.slice, rel=1e-5, abs=1e-6)
            assert (x.barrier, x.interior_min) == (y.barrier, y.interior_min)
            assert y.batch_loss == pytest.approx(x.batch_loss, rel=1e-5)
        ca, cb = list(a.curvature()), list(b.curvature())
        assert [c.step for c in ca] == [c.step for c in cb] == [0, 12, 24]
        for x, y in zip(ca, cb, strict=True):
            assert y.eigenvalues == pytest.approx(x.eigenvalues, rel=1e-3)
            for p, q in zip(x.alignment, y.alignment, strict=True):
                assert q.subspace_mean == pytest.approx(p.subspace_mean, rel=1e-3, abs=1e-4)


def test_distributed_flags_are_checked(tmp_path):
    base = ["run", "--headless", "--sessions-dir", str(tmp_path)]
    for extra, words in ((["--nproc", "0"], "--nproc"),
                         (["--nnodes", "2"], "--rdzv-endpoint"),
                         (["--nproc", "2", "--in-process"], "--in-process")):  # fmt: skip
        out = cli(*base, *extra)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr


LIGHTNING = """
import sys, torch
import lightning.pytorch as pl
from torch import nn
from sgdwalk.integrations.lightning import WalkerCallback

torch.manual_seed(0)
x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))

class M(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    def training_step(self, batch, i):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])
    def forward(self, x):
        return self.net(x)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
trainer = pl.Trainer(max_epochs=1, strategy="ddp", devices=2, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False,
                     callbacks=[WalkerCallback(probe=(x[:101], y[:101]), session="d",
                                               sessions_dir=sys.argv[1], budget=None)])
trainer.fit(M(), loader)
"""

HF = """
import sys, torch, transformers
from sgdwalk.integrations.hf import WalkerCallback

torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32,
                                 max_position_embeddings=16, num_labels=2)
model = transformers.BertForSequenceClassification(config)
g = torch.Generator().manual_seed(1)
ids = torch.randint(1, 50, (64, 8), generator=g)
rows = [{"input_ids": i, "attention_mask": torch.ones(8, dtype=torch.long),
         "labels": int(i[0] > 25)} for i in ids]
args = transformers.TrainingArguments(output_dir=sys.argv[1] + "/out",
    per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-3, report_to=[],
    save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
    callbacks=[WalkerCallback(session="d", sessions_dir=sys.argv[1], probe_size=33,
                              budget=None)])
trainer.train()
"""


@pytest.mark.parametrize("framework", ["lightning", "transformers"])
def test_the_integrations_under_torchrun_write_one_session(tmp_path, framework):
    pytest.importorskip(framework)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(LIGHTNING if framework == "lightning" else HF))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            str(script), str(tmp_path / "sessions")]  # fmt: skip
    out = subprocess.run(argv, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=HANG)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    good, bad = list_sessions(tmp_path / "sessions")
    assert not bad and [s.name for s in good] == ["d"]
    with open_session(tmp_path / "sessions" / "d") as s:
        assert s.status == "finished" and s.info["world_size"] == 2
        steps = list(s.steps())
    # 256 rows in batches of 16 over 2 ranks: 8 steps; 64 rows in batches of 8 over 2: 4 steps
    assert len(steps) == (8 if framework == "lightning" else 4)
    assert all(r.measured for r in steps)

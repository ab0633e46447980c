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
                        hessian_every=4, top_k=3, batch_size=32)
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

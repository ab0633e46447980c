"""What a sharded probe costs per rank: the Walker's measuring time per step under torchrun with
1 and 2 processes on the same probe, and the time of the one all_reduce a measured step adds.

Each process gets one CPU thread (OMP_NUM_THREADS=1), so on a 2-core machine the two ranks have a
core each and the per-rank figure means what it would on two devices.

    python tests/bench/bench_shard.py            # runs torchrun itself, prints JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, sys, time
import torch, torch.distributed as dist
from torch import nn
import sgdwalk

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
x, y = torch.randn(8192, 64), torch.randint(0, 10, (8192,))
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                      nn.Linear(256, 10))
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
w = sgdwalk.Walker(ddp, (x, y), sessions_dir=sys.argv[1], probe_size=8192)
inside = []
opt.register_step_pre_hook(lambda *_: inside.append(-time.perf_counter()))
w.attach(opt)
opt.register_step_post_hook(lambda *_: inside.__setitem__(-1, inside[-1] + time.perf_counter()))
for step in range(30):
    i = step * 64 % 8192
    loss = nn.functional.cross_entropy(ddp(x[i:i + 64]), y[i:i + 64])
    opt.zero_grad(); loss.backward(); opt.step()
reduce = None
if w.shard is not None:
    v = torch.zeros(11)
    t = time.perf_counter()
    for _ in range(200):
        w.shard.sum(v)
    reduce = (time.perf_counter() - t) / 200
w.close()
steady = sorted(inside[5:])[len(inside[5:]) // 2]
print(json.dumps({"rank": rank, "measure_s_per_step": steady, "allreduce_s": reduce}))
dist.destroy_process_group()
"""


def main() -> None:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "w.py")
        with open(script, "w") as f:
            f.write(WORKER)
        for n in (1, 2):
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={n}", script, d]  # fmt: skip
            t = time.perf_counter()
            res = subprocess.run(argv, capture_output=True, text=True,
                                 env=os.environ | {"OMP_NUM_THREADS": "1"}, check=True)  # fmt: skip
            lines = [json.loads(s) for s in res.stdout.splitlines() if s.startswith("{")]
            out[f"nproc={n}"] = {"ranks": lines, "wall_s": time.perf_counter() - t}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

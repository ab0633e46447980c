"""Would measuring in a background thread pay on this CPU? (issue 19's "off the critical path")

The paper's MLP (784-500-350-10, batch 128) trains on one torch thread while a second Python
thread does what a measured step costs: one slice, 10 forward passes of a 2,048-example probe on
a private copy of the model, over and over. Reported: the loop's milliseconds a step without and
with the worker, and the slices the worker finished a second; against it, the synchronous budget
(``budget=0.5``) buys half a bare step of measuring per step.

    python tests/bench/bench_worker_thread.py
"""

from __future__ import annotations

import copy
import json
import statistics
import threading
import time

import torch
from torch import nn

BATCH, PROBE, POINTS = 128, 2048, 10


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6144, 784, generator=g), torch.randint(0, 10, (6144,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 350), nn.ReLU(),
                        nn.Linear(350, 10))  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    shadow = copy.deepcopy(net)

    def loop(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            k = i * BATCH % (len(x) - BATCH)
            loss = nn.functional.cross_entropy(net(x[k : k + BATCH]), y[k : k + BATCH])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / n

    def one_slice() -> None:
        with torch.no_grad():
            for _ in range(POINTS):
                shadow(x[:PROBE])

    stop, slices = threading.Event(), [0]

    def worker() -> None:
        while not stop.is_set():
            one_slice()
            slices[0] += 1

    loop(50)  # warm-up
    bare = statistics.median(loop(100) for _ in range(3))
    start = time.perf_counter()
    one_slice()
    alone = time.perf_counter() - start
    thread = threading.Thread(target=worker)
    thread.start()
    start = time.perf_counter()
    busy = statistics.median(loop(100) for _ in range(3))
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    per_second = slices[0] / elapsed
    print(json.dumps({
        "bare_ms": 1e3 * bare, "with_worker_ms": 1e3 * busy, "with_worker_x": busy / bare,
        "slice_alone_ms": 1e3 * alone, "worker_slices_per_s": per_second,
        "worker_measured_share": per_second * busy,  # of the loop's steps
        "budget_half_measured_share": 0.5 * bare / alone,  # the synchronous budget at 1.5x
    }))  # fmt: skip


if __name__ == "__main__":
    main()

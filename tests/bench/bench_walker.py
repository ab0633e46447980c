"""What the Walker costs a user's loop: the same loop with and without it, side by side.

A small CNN on random 3x16x16 data (the README's kind of script), batch 64, SGD with momentum.
Rounds alternate plain / Walker / Walker with ``budget=0.5`` so drift on a noisy machine hits all
alike; reports the median seconds per step of each and the ratios to plain. The Walker measures
every step (11-point slice of a 512-example probe) unless a budget is set.

    python tests/bench/bench_walker.py --rounds 3 --steps 60

Memory: the Walker holds parameter-sized float vectors (its private copy's flat parameters, θ_0,
θ_t, g_t, Δ_t, and θ_{t+1} while measuring): printed as a count times the parameter bytes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch import nn

import sgdwalk


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 4),
    )  # fmt: skip


def loop(steps: int, walker_args: dict | None, folder: str) -> float:
    torch.manual_seed(1)
    x, y = torch.randn(2048, 3, 16, 16), torch.randint(0, 4, (2048,))
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    walker = None
    if walker_args is not None:
        walker = sgdwalk.Walker(net, (x[:512], y[:512]), sessions_dir=folder, **walker_args)
        walker.attach(opt)
    start = time.perf_counter()
    for i in range(steps):
        k = i * 64 % 2048
        loss = nn.functional.cross_entropy(net(x[k : k + 64]), y[k : k + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    if walker is not None:
        walker.close()
    return seconds / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    settings = {"plain": None, "walker": {}, "walker budget=0.5": {"budget": 0.5}}
    times: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for name, walker_args in settings.items():
                times[name].append(loop(args.steps, walker_args, folder))
    med = {k: statistics.median(v) for k, v in times.items()}
    params = sum(p.numel() for p in model().parameters())
    out = {
        "seconds_per_step": med,
        "ratio_to_plain": {k: v / med["plain"] for k, v in med.items()},
        "params": params,
        "walker_vectors": "7 x params (flat copy, θ_0, θ_t, g_t, Δ_t, θ_t+1, g_t+1 in flight)",
        "walker_vector_bytes": 7 * params * 4,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

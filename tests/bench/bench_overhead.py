"""What watching costs by default: a loop bare, with the default Walker, and with budget=None.

Three loops a user would write (one torch thread each, so the machine's other work matters
less): the digits MLP of ``sgdwalk run`` (batch 64), the paper's MLP 784-500-350-10 (batch 128,
a 2,048-example probe) and a small CNN (batch 64, 3x16x16, a 512-example probe). Each runs its
epochs bare, with ``Walker(...)`` at its default (``budget=0.5``) and with ``budget=None`` (every
step); training is the same in all three (the Walker never changes it), so the every-step run's
per-epoch interior-minimum share is the truth the default run's sample estimates. Reported, per
loop: seconds per step, the ratios to bare, the share of steps measured, the intervals' mean
half-width, and how many epochs' intervals hold the truth.

    python tests/bench/bench_overhead.py --epochs 30 --truth-epochs 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

import sgdwalk

Loop = tuple[Callable[[], nn.Module], torch.Tensor, torch.Tensor, int, int, float]


def digits() -> Loop:
    from sgdwalk.data import load_data
    from sgdwalk.models import build_model

    data = load_data("digits", "data", torch.device("cpu"))
    x = data.inputs(slice(None))
    return (lambda: build_model("mlp", data.input_shape, data.num_classes), x, data.y_train,
            64, 1500, 0.5)  # fmt: skip


def paper_mlp() -> Loop:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6144, 784, generator=g), torch.randint(0, 10, (6144,), generator=g)
    return (lambda: nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 350), nn.ReLU(),
                                  nn.Linear(350, 10)), x, y, 128, 2048, 0.1)  # fmt: skip


def cnn() -> Loop:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2048, 3, 16, 16, generator=g), torch.randint(0, 4, (2048,), generator=g)
    return (lambda: nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 4)), x, y, 64, 512, 0.05)  # fmt: skip


LOOPS = {"digits-mlp": digits, "paper-mlp": paper_mlp, "cnn": cnn}


def train(loop: Loop, epochs: int, walker: dict | None, folder: str, name: str) -> float:
    """Seconds per step of ``epochs`` epochs (``walker``: the Walker's arguments, None: bare)."""
    make, x, y, batch, probe, lr = loop
    torch.manual_seed(0)
    net = make()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    w = None
    if walker is not None:
        w = sgdwalk.Walker(net, (x[:probe], y[:probe]), sessions_dir=folder, session=name,
                           batch_size=batch, **walker)  # fmt: skip
        w.attach(opt)
    steps, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        if w is not None:
            w.epoch = epoch
        for k in range(0, len(x) - batch + 1, batch):
            loss = nn.functional.cross_entropy(net(x[k : k + batch]), y[k : k + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - start
    if w is not None:
        w.close()
    return seconds / steps


def shares(folder: str, name: str) -> list[tuple[float, float, float, int]]:
    with sgdwalk.open_session(f"{folder}/{name}") as s:
        return [(e.interior_min_fraction, e.interior_min_low or 0.0, e.interior_min_high or 1.0,
                 e.measured_steps or 0) for e in s.epochs()]  # fmt: skip


def measure(name: str, epochs: int, truth_epochs: int) -> dict:
    loop = LOOPS[name]()
    with tempfile.TemporaryDirectory() as folder:
        # bare before and after (the mean), so a machine that gets busier or quieter meanwhile
        # falls on both sides of the ratio alike
        bare = train(loop, epochs, None, folder, "")
        default = train(loop, epochs, {}, folder, "default")
        every = train(loop, min(epochs, truth_epochs), {"budget": None}, folder, "every")
        bare = (bare + train(loop, epochs, None, folder, "")) / 2
        sampled, truth = shares(folder, "default"), shares(folder, "every")
    pairs = [(s, t) for s, t in zip(sampled, truth, strict=False) if s[3]]  # the truth's epochs
    held = sum(lo - 1e-9 <= t[0] <= hi + 1e-9 for (_, lo, hi, _), t in pairs)
    with_sample = [s for s in sampled if s[3]]
    per_epoch = len(loop[1]) // loop[3]
    return {
        "loop": name, "bare_ms": 1e3 * bare, "default_x": default / bare, "every_step_x": every / bare,
        "measured": sum(s[3] for s in sampled) / (per_epoch * epochs),
        "half_width": sum((hi - lo) / 2 for _, lo, hi, _ in with_sample) / max(1, len(with_sample)),
        "epochs_held": f"{held} of {len(pairs)}",
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument(
        "--truth-epochs",
        type=int,
        default=3,
        help="epochs of the every-step run (the truth for the default run's first)",
    )
    ap.add_argument("--loops", default=",".join(LOOPS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.loops.split(","):
        print(json.dumps(measure(name, args.epochs, args.truth_epochs)), flush=True)


if __name__ == "__main__":
    main()

"""What Cockpit's "economy" configuration costs next to the Walker, on the paper's MLP.

The loop is ``paper_mlp`` of bench_overhead.py (MLP 784-500-350-10, batch 128, SGD lr 0.1,
6,144 random examples, a 2,048-example probe, one torch thread). It runs the same number of
steps bare; with Cockpit (``configuration("economy")``, tracked every step as that schedule
says; model and loss extended with BackPACK, the individual losses from a second loss with
reduction="none", following Cockpit's basic example); with ``sgdwalk.Walker`` at its default;
and with ``budget=None``. Bare runs first and last (``--rounds`` times the whole sequence) and
the ratios are to the mean of all bare runs, so drift on a busy machine falls on all alike.
One JSON line per configuration: milliseconds per step and the ratio to bare.

Cockpit is not a dependency of sgdwalk; run this from a venv that has both, e.g.

    /tmp/cockpit-venv/bin/python tests/bench/bench_cockpit.py --epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings

import torch
from torch import nn

import sgdwalk

BATCH, PROBE, LR, EXAMPLES = 128, 2048, 0.1, 6144


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(EXAMPLES, 784, generator=g), torch.randint(0, 10, (EXAMPLES,), generator=g)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 350), nn.ReLU(),
                         nn.Linear(350, 10))  # fmt: skip


def batches(x: torch.Tensor, epochs: int):
    for epoch in range(1, epochs + 1):
        for k in range(0, len(x) - BATCH + 1, BATCH):
            yield epoch, slice(k, k + BATCH)


def bare(x: torch.Tensor, y: torch.Tensor, epochs: int, folder: str, name: str) -> float:
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    steps, start = 0, time.perf_counter()
    for _, b in batches(x, epochs):
        loss = nn.functional.cross_entropy(net(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return (time.perf_counter() - start) / steps


def walker(budget: dict):
    def train(x: torch.Tensor, y: torch.Tensor, epochs: int, folder: str, name: str) -> float:
        net = mlp()
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        w = sgdwalk.Walker(net, (x[:PROBE], y[:PROBE]), sessions_dir=folder, session=name,
                           batch_size=BATCH, **budget)  # fmt: skip
        w.attach(opt)
        steps, start = 0, time.perf_counter()
        for epoch, b in batches(x, epochs):
            w.epoch = epoch
            loss = nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        seconds = time.perf_counter() - start
        w.close()
        return seconds / steps

    return train


def cockpit_economy(x: torch.Tensor, y: torch.Tensor, epochs: int, folder: str, name: str) -> float:
    from backpack import extend
    from cockpit import Cockpit
    from cockpit.utils.configuration import configuration

    net = extend(mlp())
    loss_fn = extend(nn.CrossEntropyLoss(reduction="mean"))
    individual_loss_fn = nn.CrossEntropyLoss(reduction="none")
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    cockpit = Cockpit(net.parameters(), quantities=configuration("economy"))
    global_step, start = 0, time.perf_counter()
    for _, b in batches(x, epochs):
        opt.zero_grad()
        outputs = net(x[b])
        loss = loss_fn(outputs, y[b])
        losses = individual_loss_fn(outputs, y[b]).detach()
        info = {"batch_size": BATCH, "individual_losses": losses, "loss": loss, "optimizer": opt}
        with cockpit(global_step, info=info):
            loss.backward(create_graph=cockpit.create_graph(global_step))
        opt.step()
        global_step += 1
    seconds = time.perf_counter() - start
    outputs = {type(q).__name__: len(q.get_output()) for q in cockpit.quantities}
    print(json.dumps({"cockpit_steps_with_output": outputs}), flush=True)  # of global_step
    return seconds / global_step


CONFIGS = {
    "cockpit-economy": cockpit_economy,
    "walker-default": walker({}),
    "walker-every-step": walker({"budget": None}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs of 6,144 examples (48 steps)")
    ap.add_argument("--rounds", type=int, default=1, help="times to run the whole sequence")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = data()
    steps = args.epochs * (EXAMPLES // BATCH)
    times: dict[str, list[float]] = {"bare": []}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bare(x, y, 1, folder, "")  # warm-up, not timed
        for r in range(args.rounds):
            times["bare"].append(bare(x, y, args.epochs, folder, ""))
            for name, train in CONFIGS.items():
                times.setdefault(name, []).append(train(x, y, args.epochs, folder, f"{name}-{r}"))
        times["bare"].append(bare(x, y, args.epochs, folder, ""))
    base = statistics.mean(times["bare"])
    for name, runs in times.items():
        ms = 1e3 * statistics.mean(runs)
        print(json.dumps({"config": name, "steps": steps, "runs": len(runs), "ms_per_step": ms,
                          "x_bare": ms / (1e3 * base),
                          "each_ms": [round(1e3 * t, 3) for t in runs]}))  # fmt: skip
    seen = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    print(json.dumps({"warnings": seen}), flush=True)


if __name__ == "__main__":
    main()

"""sgdwalk's slice side by side with loss-landscapes' ``linear_interpolation``.

Same model (no BatchNorm), same two parameter vectors, same probe examples, K points: the other
library evaluates α = 1/K .. 1 (its ``steps=K``), K forward passes of the whole probe in one batch,
which is what a steady-state sgdwalk step costs too (L_0 is the previous step's L_K). sgdwalk is
timed in both slice modes, with the first-layer shortcut (``sgdwalk.shortcut``) and without it
(``plain``), its steps chained as a run chains them; ``loop chunked`` is the loop with the shortcut
over the probe in the chunks ``sgdwalk run`` takes on this machine (``speed_chunk``). Each figure is the median of ``--repeats``
interleaved trials; the speed-ups are ratios within this run. The two libraries' losses are checked
to agree first.

    pip install loss-landscapes   # not a dependency of sgdwalk
    python tests/bench/bench_landscapes.py                       # the paper's MNIST MLP, a CNN
    python tests/bench/bench_landscapes.py --probe 1024 --points 20 --json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from sgdwalk.batches import make_chunks
from sgdwalk.data import load_data
from sgdwalk.landscape import interpolation_alphas
from sgdwalk.models import cnn, mlp
from sgdwalk.probe import Evaluator, flat_params, speed_chunk
from sgdwalk.slicing import Slicer

CASES = {  # name: (dataset, model builder)
    "mlp (784-500-350-10)": ("synthetic-mnist", lambda s, c: mlp(s, c, batchnorm=False)),
    "cnn (cifar-shaped)": ("synthetic-cifar10", lambda s, c: cnn(s, c)),
}
WAYS = ["loop plain", "vmap plain", "loop", "vmap", "loop chunked"]


def case(name: str, probe: int, points: int, repeats: int) -> dict[str, object]:
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    dataset, build = CASES[name]
    data = load_data(dataset, "data", torch.device("cpu"))
    torch.manual_seed(0)
    model = build(data.input_shape, data.num_classes).eval()
    x, y = data.inputs(slice(0, probe)), data.y_train[:probe]
    theta0 = flat_params(model)
    theta1 = theta0 + 1e-2 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(1))
    end = copy.deepcopy(model)
    vector_to_parameters(theta1, end.parameters())
    metric = Loss(nn.functional.cross_entropy, x, y)
    chunks = make_chunks(x, y, probe)  # one chunk: the same batch as the other library's
    rows = speed_chunk(model, x[:2], y[:2])  # and as ``sgdwalk run`` would chunk it
    alphas = interpolation_alphas(points)

    def theirs() -> list[float]:
        return loss_landscapes.linear_interpolation(model, end, metric, steps=points,
                                                    deepcopy_model=True).tolist()  # fmt: skip

    evaluators, walks = {}, {}
    for way in WAYS:
        ev = Slicer(Evaluator(model), way.split()[0])
        ev.use_shortcut = "plain" not in way
        evaluators[way] = ev
        mine = make_chunks(x, y, rows) if way.endswith("chunked") else chunks
        walks[way] = _walk(ev, theta0, theta1, alphas, mine)
    ours = evaluators["loop"].losses(theta0, theta1, alphas, chunks).tolist()[1:]
    agree = max(abs(a - b) / abs(b) for a, b in zip(theirs(), ours, strict=True))
    fns: dict[str, Callable[[], object]] = {"loss-landscapes": theirs, **walks}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - started)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"case": name, "params": theta0.numel(), "probe": probe, "points": points,
            "shortcut": evaluators["loop"].take_notes()[0], "max_rel_diff": agree, "chunk": rows,
            "ms": {k: v * 1e3 for k, v in med.items()},
            "speedup": {k: med["loss-landscapes"] / med[k] for k in WAYS}}  # fmt: skip


def _walk(ev: Slicer, theta0: torch.Tensor, theta1: torch.Tensor, alphas: list[float],
          chunks: list) -> Callable[[], object]:  # fmt: skip
    """A slice per call, back and forth between the two vectors, L_0 known: a run's steady state."""
    ends, losses = [theta1, theta0], []
    for theta in ends:
        ev.ev.load(theta)
        losses.append(ev.ev.loss(chunks))

    def step() -> object:
        ends.reverse()
        losses.reverse()
        return ev.losses(ends[0], ends[1], alphas, chunks, losses[0]).tolist()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", type=int, default=2048)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [case(name, args.probe, args.points, args.repeats) for name in CASES]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"| model | params | loss-landscapes | {' | '.join(WAYS)} |")
    print("| --- | --- | --- |" + " --- |" * len(WAYS))
    for r in results:
        ms, up = r["ms"], r["speedup"]
        cells = [f"{ms[w]:.1f} ms ({up[w]:.2f}x)" for w in WAYS]  # type: ignore[index]
        print(
            f"| {r['case']} | {r['params']:,} | {ms['loss-landscapes']:.1f} ms | "  # type: ignore[index]
            f"{' | '.join(cells)} |"
        )
    for r in results:
        print(
            f"{r['case']}: first-layer shortcut {str(r['shortcut']).split(' ', 3)[-1]}; "
            f"losses agree to {r['max_rel_diff']:.1e} relative; chunked: {r['chunk']} rows"
        )


if __name__ == "__main__":
    main()

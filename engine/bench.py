"""``sgdwalk bench``: the cost of each measurement relative to its ideal, in one process.

Absolute times on a shared machine are noise; ratios against a reference measured in the same run,
on the same probe set and model, are not. Each figure is the median of ``repeats`` trials, and the
two step timings are interleaved so drift hits both alike.

- t_forward: one no-grad forward pass of the probe set (what a slice point ideally costs).
- t_slice: one step's slice in steady state (L_0 reused, so K passes): slice_ratio = t_slice/(K t_forward).
  Both ways of evaluating it are timed (t_slice_loop: K passes; t_slice_vmap: the K points batched
  with torch.func), with the first-layer shortcut (``sgdwalk.shortcut``) where it applies and
  without it (``_plain``); t_slice and slice_ratio are those of the mode the run would use (for
  ``auto``, the faster of the two, as its timing on the first steps would keep).
- t_step: one training step with measurements off, records discarded.
- t_step_recorded: the same step with the session writer on: record_overhead = t_step_recorded/t_step − 1.
- t_step_budget: a step of a fresh run measured under the default time budget (``--budget 0.5``),
  over its first ``BUDGET_STEPS`` steps, its start (measured while the costs are learnt, the slice
  mode's trials) and its epoch summaries included: budget_overhead = t_step_budget/t_step, at most
  1.5 by design where an epoch's summary is small beside its steps.
- t_decompose, t_batch_sharpness: what ``--decompose`` and ``--batch-sharpness`` add to a measured
  step, reported per slice (decompose_per_slice, batch_sharpness_per_slice).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sgdwalk.config import RunConfig
from sgdwalk.errors import ConfigError
from sgdwalk.probe import flat_params
from sgdwalk.records import StepMeasured
from sgdwalk.session import SessionWriter
from sgdwalk.shortcut import FirstLayer
from sgdwalk.timing import median_time
from sgdwalk.train import Run, prepare

TARGETS = {"slice_ratio": "<= 1.10", "record_overhead": "<= 0.05", "budget_overhead": "<= 1.5"}
STEPS_PER_TRIAL = 100
BUDGET_STEPS = 3000


def _time_steps(run: Run, n: int, writer: SessionWriter | None, bare: bool = True) -> float:
    """Mean seconds per training step over ``n`` steps (epoch summaries excluded when ``bare``,
    included when not: what the run takes in all)."""
    gen = run.records(bare=bare)
    total, count = 0.0, 0
    while count < n:
        t = time.perf_counter()
        rec = next(gen, None)
        if rec is None:  # the run ended: it diverged (its last record said so)
            raise ConfigError(f"--lr: training diverged at lr {run.cfg.lr:g} before the timing "
                              "ended; bench a lower one")  # fmt: skip
        if writer is not None:
            writer.write(rec)
        dt = time.perf_counter() - t
        if isinstance(rec, StepMeasured) or not bare:
            total += dt
            count += isinstance(rec, StepMeasured)
    gen.close()
    return total / count


def slice_costs(run: Run, repeats: int) -> dict[str, float]:
    """One slice in steady state, each mode with and without the first-layer shortcut.

    The timed slices walk back and forth between two parameter vectors, as a run's steps chain:
    each starts where the last ended, with L_0 known (and the first layer's output there kept).
    """
    sl, chunks, k = run.instrument.slicer, run.probe.chunks, run.cfg.points
    ev = sl.ev
    theta0 = flat_params(run.model)
    theta1 = theta0 + 1e-3 * torch.randn(
        theta0.shape, generator=torch.Generator().manual_seed(0)
    ).to(theta0)
    ev.load(theta0)
    ends = [theta0, theta1]
    losses = [ev.loss(chunks)]
    ev.load(theta1)
    losses.append(ev.loss(chunks))

    def forward() -> None:
        ev.load(theta0)
        ev.loss(chunks).item()  # sync point: end of the timed pass

    def one_slice() -> None:
        ends.reverse()
        losses.reverse()
        sl.losses(ends[0], ends[1], run.instrument.meter.alphas, chunks, losses[0]).tolist()  # sync

    forward()  # warm-up (allocator, kernels)
    t_forward = median_time(forward, repeats, run.device)
    out = {"t_forward": t_forward}
    used = sl.mode, sl.use_shortcut
    try:
        for shortcut, suffix in ((False, "_plain"), (True, "")):
            sl.use_shortcut = shortcut
            for mode in ("loop", "vmap"):
                sl.mode = mode
                one_slice()  # warm-up
                one_slice()
                out[f"t_slice_{mode}{suffix}"] = median_time(one_slice, repeats, run.device)
                out[f"slice_ratio_{mode}{suffix}"] = out[f"t_slice_{mode}{suffix}"] / (
                    k * t_forward
                )
    finally:
        sl.mode, sl.use_shortcut = used
    mode = kept_mode(run, out)
    out["t_slice"] = out[f"t_slice_{mode}"]
    out["slice_ratio"] = out[f"slice_ratio_{mode}"]
    return out | extras_costs(run, theta0, theta1, repeats)


def extras_costs(
    run: Run, theta0: torch.Tensor, theta1: torch.Tensor, repeats: int
) -> dict[str, float]:
    """What ``--decompose`` (two forward passes at the split points, k = top_k eigenvectors) and
    ``--batch-sharpness`` (one Hessian-vector product on a training batch) add to a step."""
    from sgdwalk.curvature.hvp import batch_sharpness
    from sgdwalk.meter import split_losses

    ev, chunks = run.evaluator, run.probe.chunks
    gen = torch.Generator().manual_seed(1)
    v, _ = torch.linalg.qr(torch.randn(ev.numel, run.cfg.top_k, generator=gen).to(theta0))
    delta = theta1 - theta0
    batch = run.probe.examples(torch.arange(min(run.batch_size, run.data.n_train)))
    g = torch.randn(ev.numel, generator=gen).to(theta0)

    def split() -> None:
        split_losses(ev, theta0, delta, v, chunks).tolist()

    def sharpness() -> None:
        batch_sharpness(ev, theta0, g, batch).item()

    split()  # warm-up
    sharpness()
    return {"t_decompose": median_time(split, repeats, run.device),
            "t_batch_sharpness": median_time(sharpness, repeats, run.device)}  # fmt: skip


def step_costs(run: Run, repeats: int) -> dict[str, float]:
    bare, recorded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        writer = SessionWriter(Path(tmp) / "bench", run.cfg.as_dict(), {"bench": True})
        _time_steps(run, 10, None)  # warm-up
        for _ in range(repeats):
            bare.append(_time_steps(run, STEPS_PER_TRIAL, None))
            recorded.append(_time_steps(run, STEPS_PER_TRIAL, writer))
        writer.close("finished")
    t_step, t_rec = statistics.median(bare), statistics.median(recorded)
    return {"t_step": t_step, "t_step_recorded": t_rec, "record_overhead": t_rec / t_step - 1}


def budget_cost(cfg: RunConfig) -> float:
    """Seconds per step of a fresh run under the default time budget, its start included."""
    from sgdwalk.values import TimeBudget

    run = prepare(dataclasses.replace(cfg, budget=TimeBudget(0.5)))
    return _time_steps(run, BUDGET_STEPS, None, bare=False)


def kept_mode(run: Run, times: dict[str, float]) -> str:
    """Which timed slice is the run's: ``loop`` or ``vmap`` (with the first-layer shortcut where
    it applies), ``…_plain`` (without); for ``auto``, the fastest, as its trials would keep."""
    if run.cfg.slice_mode != "auto":
        return run.cfg.slice_mode
    ways = [f"{m}{w}" for m in ("loop", "vmap") for w in ("", "_plain")]
    return min(ways, key=lambda w: times[f"t_slice_{w}"])


def _mode_name(run: Run, key: str) -> str:
    """ "auto: vmap + first-layer shortcut" for the timed slice ``key`` ("vmap")."""
    mode = key.removesuffix("_plain")
    applies = isinstance(run.instrument.slicer.first_layer, FirstLayer)
    name = f"{mode} + first-layer shortcut" if applies and not key.endswith("_plain") else mode
    return f"auto: {name}" if run.cfg.slice_mode == "auto" else name


def run_bench(cfg: RunConfig, repeats: int = 7) -> dict[str, Any]:
    """Prepare the run described by ``cfg`` (many epochs, curvature off) and measure it."""
    cfg = dataclasses.replace(cfg, epochs=10_000, hessian_every=None)
    run = prepare(cfg)
    s = slice_costs(run, repeats)
    t = step_costs(run, repeats)
    t["t_step_budget"] = budget_cost(cfg)
    result = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "device": str(run.device),
        "params": run.info["params"],
        "probe_size": run.probe.size,
        "points": cfg.points,
        "batch_size": run.batch_size,
        "slice_mode": _mode_name(run, kept_mode(run, s)),
        "shortcut": run.instrument.slicer.shortcut_why,  # found by the timed slices
        "times": {k: v for k, v in (s | t).items() if k.startswith("t_")},
        "ratios": {
            "slice_ratio": s["slice_ratio"],
            "slice_ratio_loop": s["slice_ratio_loop"],
            "slice_ratio_vmap": s["slice_ratio_vmap"],
            "slice_ratio_loop_plain": s["slice_ratio_loop_plain"],
            "slice_ratio_vmap_plain": s["slice_ratio_vmap_plain"],
            "record_overhead": t["record_overhead"],
            "budget_overhead": t["t_step_budget"] / t["t_step"],
            "decompose_per_slice": s["t_decompose"] / s["t_slice"],
            "batch_sharpness_per_slice": s["t_batch_sharpness"] / s["t_slice"],
        },
        "counts": {},
        "targets": dict(TARGETS),
    }
    from sgdwalk.curvature.bench import curvature_costs  # last: it trains the run one more epoch

    for key, part in curvature_costs(run, repeats).items():
        result[key] |= part
    return result

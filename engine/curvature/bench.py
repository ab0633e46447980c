"""The cost of curvature, for ``sgdwalk bench``: each figure against its ideal, in one process.

Why ratios: absolute seconds on a shared machine are noise, but a product timed against a gradient
on the same data, model and thread count is not. Medians of ``repeats`` trials.

- t_grad: one gradient of L over the Hessian probe (forward + backward over its chunks).
- t_hvp: one Hessian-vector product with the default method, in steady state (the cached graph, when
  it fits, is built once per curvature pass: t_hvp_cache_build). hvp_ratio = t_hvp / t_grad.
  t_hvp_double_backward / t_hvp_forward_over_reverse: the uncached methods, for the choice.
- lanczos_products: products our Lanczos needs for the top-k at 1e-3 relative residual, warm-started
  from the previous pass one epoch earlier (as in a run); _cold from a random start at the same
  point as eigsh_products (scipy's ARPACK eigsh over a LinearOperator, same tolerance).
- t_curvature_pass: one whole warm pass (top-k + alignment for the configured batch sizes);
  curvature_epochs = t_curvature_pass / t_epoch, t_epoch being one measured training epoch.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch

from sgdwalk.curvature.hvp import differentiable, flat_gradient, hessian_operator
from sgdwalk.curvature.lanczos import lanczos
from sgdwalk.curvature.measure import CurvatureMeter
from sgdwalk.probe import flat_params
from sgdwalk.records import CurvatureMeasured, EpochEnded
from sgdwalk.timing import median_time

TARGETS = {"hvp_ratio": "<= 2.5", "lanczos_products": "<= 40"}


def product_times(meter: CurvatureMeter, repeats: int) -> dict[str, float]:
    ev, chunks = meter.ev, meter.probe.hessian_chunks
    v = torch.randn(ev.numel, generator=torch.Generator().manual_seed(0)).to(ev.flat)
    out: dict[str, float] = {}
    with differentiable(ev):
        out["t_grad"] = median_time(
            lambda: flat_gradient(ev, chunks), repeats, ev.flat.device, warm_up=True
        )
    for name, method, cache in (("t_hvp", "double_backward", None),
                                ("t_hvp_double_backward", "double_backward", False),
                                ("t_hvp_forward_over_reverse", "forward_over_reverse", False)):  # fmt: skip
        t = time.perf_counter()
        with hessian_operator(ev, chunks, method, cache) as op:
            out.setdefault("t_hvp_cache_build", time.perf_counter() - t)
            out[name] = median_time(partial(op, v), repeats, ev.flat.device, warm_up=True)
    return out


def eigsh_products(meter: CurvatureMeter) -> int:
    """Products scipy's eigsh needs for the same top-k and tolerance (-1 without scipy)."""
    try:
        import numpy as np
        from scipy.sparse.linalg import LinearOperator, eigsh
    except ImportError:
        return -1
    ev, count = meter.ev, [0]
    with hessian_operator(ev, meter.probe.hessian_chunks) as op:

        def matvec(x: np.ndarray) -> np.ndarray:
            count[0] += 1
            return op(torch.from_numpy(x.reshape(-1)).to(ev.flat)).double().cpu().numpy()

        a = LinearOperator((ev.numel, ev.numel), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).normal(size=ev.numel)
        eigsh(a, k=meter.k, which="LA", tol=meter.tol, v0=v0, return_eigenvectors=False)
    return count[0]


def _cold_products(meter: CurvatureMeter) -> int:
    ev = meter.ev
    with hessian_operator(ev, meter.probe.hessian_chunks) as op:
        r = lanczos(
            op, ev.numel, meter.k, tol=meter.tol, dtype=ev.flat.dtype, device=ev.flat.device
        )
    return r.matvecs


def _timed_pass(
    meter: CurvatureMeter, theta: torch.Tensor, step: int
) -> tuple[float, CurvatureMeasured]:
    t = time.perf_counter()
    rec = [r for r in meter.run_pass(theta, step, 0) if isinstance(r, CurvatureMeasured)][-1]
    return time.perf_counter() - t, rec


def _timed_epoch(run: Any) -> float:
    t = time.perf_counter()
    records = run.records()
    for rec in records:
        if isinstance(rec, EpochEnded):
            break
    records.close()
    return time.perf_counter() - t


def curvature_costs(run: Any, repeats: int = 7) -> dict[str, Any]:
    """Curvature figures for a prepared ``sgdwalk.train.Run`` (trains it for one epoch)."""
    meter = run.instrument.passes.meter()
    run.evaluator.load(flat_params(run.model))
    times = product_times(meter, repeats)
    cold = _cold_products(meter)
    eig = eigsh_products(meter)
    t_cold, _ = _timed_pass(meter, flat_params(run.model), 0)  # a run's first pass: cold start
    t_epoch = _timed_epoch(run)
    t_pass, rec = _timed_pass(meter, flat_params(run.model), 1)
    assert meter.last is not None
    times |= {"t_curvature_pass": t_pass, "t_curvature_pass_cold": t_cold, "t_epoch": t_epoch}
    return {
        "times": times,
        "ratios": {
            "hvp_ratio": times["t_hvp"] / times["t_grad"],
            "curvature_epochs": t_pass / t_epoch,
        },
        "counts": {
            "lanczos_products": meter.last.matvecs,
            "lanczos_products_cold": cold,
            "eigsh_products": eig,
            "curvature_hvps": rec.hvps,
            "hvp_cached": int(_cached(meter)),
        },  # fmt: skip
        "targets": dict(TARGETS),
    }


def _cached(meter: CurvatureMeter) -> bool:
    with hessian_operator(meter.ev, meter.probe.hessian_chunks) as op:
        return op.cached

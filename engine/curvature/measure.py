"""One curvature pass as records: top-k of H_P by Lanczos, then alignment per batch size.

Why a generator on a small stateful object: a pass costs tens of Hessian-vector products, so it
yields a ``PhaseProgressed`` after each one (the progress bar and dashboard keep moving), and the
meter keeps the previous pass's eigenvectors to warm-start the next Lanczos run. It reads the run
only through its Evaluator (the shadow model) and its probe set (``sgdwalk.probe_set``), so the
trained model is never touched, and the same meter serves both clients of the Instrument
(``sgdwalk.instrument``): the built-in trainer and a user's own loop (``sgdwalk.Walker``).

``CurvatureMeasured.residuals`` are relative: ‖H v_i − λ_i v_i‖ / |λ_i| (converged at <= tol), and
``hvps`` counts every product of the pass (Lanczos plus one H g_b per alignment draw).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import torch

from sgdwalk.curvature.alignment import alignment_values, draw_batches, summarize
from sgdwalk.curvature.edge import edge_of
from sgdwalk.curvature.hvp import DEFAULT_METHOD, HessianOperator, flat_gradient, hessian_operator
from sgdwalk.curvature.lanczos import LanczosResult, lanczos_steps
from sgdwalk.curvature.spectrum import Block, density, layer_tops
from sgdwalk.geometry import Geometry
from sgdwalk.probe import Evaluator
from sgdwalk.probe_set import ProbeSet
from sgdwalk.records import CurvatureMeasured, EventLogged, PhaseProgressed, Record

PHASE = "curvature"


class CurvatureMeter:
    """Measures curvature and alignment at a given θ; remembers the eigenvectors it found.

    The Hessian is of the probe loss over ``probe.hessian_chunks`` (this rank's rows; summed over
    ranks through ``probe.hessian_shard``); alignment draws mini-batches of each size in ``sizes``
    from the probe's pool. ``clock``: the run's seconds, for the records.
    """

    def __init__(
        self, ev: Evaluator, probe: ProbeSet, k: int, sizes: list[int], samples: int,
        seed: int = 0, *, tol: float = 1e-3, method: str = DEFAULT_METHOD,
        clock: Callable[[], float] = time.perf_counter, layers: list[Block] | None = None,
        density: bool = False,
    ) -> None:  # fmt: skip
        self.ev, self.probe = ev, probe
        self.k, self.sizes, self.samples = k, sizes, samples
        self.seed, self.tol, self.method, self.clock = seed, tol, method, clock
        self.layers, self.density = layers, density  # per-layer tops, the spectral density
        self.previous: torch.Tensor | None = None  # last eigenvectors: the warm start
        self.previous_step = 0  # the step they were measured at
        self.edge_start: torch.Tensor | None = None  # last edge eigenvector: its warm start
        self.expected = 3 * k  # Lanczos products we expect, for the progress total
        self.last: LanczosResult | None = None
        self._total = 0

    def basis(self) -> tuple[torch.Tensor, int] | None:
        """The latest finite top-k eigenvectors (n, k) and their step, for ``--decompose``."""
        return None if self.previous is None else (self.previous, self.previous_step)

    def run_pass(
        self, theta: torch.Tensor, step: int, epoch: int, geometry: Geometry | None = None
    ) -> Iterator[Record]:
        """Yield progress per product, then one ``CurvatureMeasured`` of H at ``theta``
        (with the edge ratio of ``geometry``, the optimizer's, when given)."""
        started = self.clock()
        self.ev.load(theta)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        pool = self.probe.pool_size
        draws = {b: draw_batches(pool, b, self.samples, gen) for b in self.sizes}
        n_align = sum(len(d) for d in draws.values())
        probe = self.probe
        with hessian_operator(self.ev, probe.hessian_chunks, self.method,
                              shard=probe.hessian_shard) as op:  # fmt: skip
            steps = lanczos_steps(op, self.ev.numel, self.k, tol=self.tol, seed=self.seed,
                                  start=self.previous, dtype=self.ev.flat.dtype,
                                  device=self.ev.flat.device)  # fmt: skip
            result = yield from self._progress(steps, step, epoch, n_align)
            finite = bool(torch.isfinite(result.eigenvalues).all())
            alignment = []
            if finite:
                g_full = flat_gradient(self.ev, probe.examples(torch.arange(pool)))
                for b, batches in draws.items():
                    values = yield from self._draws(op, batches, result, g_full, (step, epoch))
                    alignment.append(summarize(b, values))
            extra = (yield from self._extras(op, geometry, result, (step, epoch))) if finite else {}
        if finite:  # a spectrum that is not there is no warm start for the next pass
            self.previous, self.expected = result.eigenvectors, result.matvecs
            self.previous_step = step
        self.last = result
        rel = result.residuals / result.eigenvalues.abs()  # ‖Hv − λv‖ / |λ|
        now = self.clock()
        yield CurvatureMeasured(
            step=step, epoch=epoch, eigenvalues=result.eigenvalues.tolist(),
            residuals=rel.tolist(), hvps=op.products, alignment=alignment, elapsed=now,
            seconds=now - started, **extra,
        )  # fmt: skip
        if not finite:
            yield EventLogged(step, epoch, "warning", "warning",
                              f"curvature at step {step} is not finite (NaN/inf): recorded "
                              "as NaN, alignment skipped", now)  # fmt: skip

    def _extras(
        self, op: HessianOperator, geometry: Geometry | None, result: LanczosResult,
        where: tuple[int, int],
    ) -> Generator[PhaseProgressed, None, dict[str, Any]]:  # fmt: skip
        """The optimizer's edge, each layer's top and the spectral density, as asked for."""
        out: dict[str, Any] = {}
        like = self.ev.flat
        if geometry is not None:
            edge = yield from self._counted(
                edge_of(op, geometry, float(result.eigenvalues[0]), self.edge_start, self.seed),
                op, where)  # fmt: skip
            self.edge_start = edge.vector if edge.vector is not None else self.edge_start
            finite = math.isfinite(edge.edge_ratio)
            out |= {"edge_ratio": edge.edge_ratio if finite else None,
                    "threshold": edge.threshold if finite else None,
                    "sharpness": edge.sharpness if finite else None,
                    "edge_line": geometry.line, "sharpness_name": geometry.sharpness_name}  # fmt: skip
        if self.layers:
            out["layer_eigenvalues"] = yield from self._counted(
                layer_tops(op, self.layers, like, self.seed), op, where
            )
        if self.density:
            nodes, weights = yield from self._counted(density(op, like, seed=self.seed), op, where)
            out |= {"density_nodes": nodes, "density_weights": weights}
        return out

    def _counted(
        self, work: Generator[int, None, Any], op: HessianOperator, where: tuple[int, int]
    ) -> Generator[PhaseProgressed, None, Any]:
        """Run ``work`` (a generator of products), with progress after each product."""
        while True:
            try:
                next(work)
            except StopIteration as done:
                return done.value
            self._total = max(self._total, op.products)
            yield PhaseProgressed(*where, PHASE, op.products, self._total)

    def _progress(
        self, steps: Generator[int, None, LanczosResult], step: int, epoch: int, n_align: int
    ) -> Generator[PhaseProgressed, None, LanczosResult]:
        """Lanczos products as progress; the total is a guess (last pass's count) until known."""
        while True:
            try:
                done = next(steps)
            except StopIteration as finished:
                self._total = finished.value.matvecs + n_align
                return finished.value
            yield PhaseProgressed(step, epoch, PHASE, done, max(self.expected, done) + n_align)

    def _draws(
        self,
        op: HessianOperator,
        batches: list[torch.Tensor],
        result: LanczosResult,
        g_full: torch.Tensor,
        where: tuple[int, int],
    ) -> Generator[PhaseProgressed, None, torch.Tensor]:
        """alignment_values for one batch size: a gradient and one product H g_b per draw."""
        pool = self.probe.pool_size  # the whole pool's gradient is g_full: not computed twice
        grads = torch.stack([g_full if len(i) >= pool else
                             flat_gradient(self.ev, self.probe.examples(i)) for i in batches])  # fmt: skip
        hgrads = op.many(grads)  # H g_b per draw, for the Rayleigh quotient
        yield PhaseProgressed(*where, PHASE, op.products, self._total)
        return alignment_values(grads, hgrads, result.eigenvectors, g_full)


def hessian_indices(
    probe_idx: torch.Tensor, n_train: int, want: int | None, seed: int
) -> torch.Tensor:
    """The fixed Hessian probe: the probe set, or a seeded subset of N of it.

    N larger than the probe set (but within the training split) draws N from the whole split.
    """
    if want is None or want == len(probe_idx):
        return probe_idx
    g = torch.Generator().manual_seed(seed + 104_729)
    pool = probe_idx.cpu() if want <= len(probe_idx) else torch.arange(n_train)
    pick = torch.randperm(len(pool), generator=g)[:want]
    return pool[pick].sort().values.to(probe_idx.device)

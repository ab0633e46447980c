"""One curvature pass as records: top-k of H_P by Lanczos, then alignment per batch size.

Why a generator on a small stateful object: a pass costs tens of Hessian-vector products, so it
yields a ``PhaseProgressed`` after each one (the progress bar and dashboard keep moving), and the
meter keeps the previous pass's eigenvectors to warm-start the next Lanczos run. It reads the run
only through its Evaluator (the shadow model) and its data, so the trained model is never touched,
and the same meter serves a user's own training loop (``sgdwalk.Walker``).

``CurvatureMeasured.residuals`` are relative: ‖H v_i − λ_i v_i‖ / |λ_i| (converged at <= tol), and
``hvps`` counts every product of the pass (Lanczos plus one H g_b per alignment draw).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import torch

from sgdwalk.config import clip_align_batch_sizes, parse_align_batch_sizes
from sgdwalk.curvature.alignment import alignment_values, draw_batches, summarize
from sgdwalk.curvature.hvp import DEFAULT_METHOD, HessianOperator, flat_gradient, hessian_operator
from sgdwalk.curvature.lanczos import LanczosResult, lanczos_steps
from sgdwalk.probe import Chunks, Evaluator, make_chunks
from sgdwalk.records import CurvatureMeasured, EventLogged, PhaseProgressed, Record
from sgdwalk.shard import Shard

PHASE = "curvature"


class CurvatureMeter:
    """Measures curvature and alignment at the Evaluator's current θ; remembers eigenvectors."""

    def __init__(
        self,
        ev: Evaluator,
        hessian_chunks: Chunks,
        examples: Callable[[torch.Tensor], Chunks],
        n_train: int,
        k: int,
        sizes: list[int],
        samples: int,
        seed: int = 0,
        tol: float = 1e-3,
        method: str = DEFAULT_METHOD,
        shard: Shard | None = None,
    ):
        self.ev, self.hessian_chunks, self.examples = ev, list(hessian_chunks), examples
        self.n_train, self.k, self.sizes, self.samples = n_train, k, sizes, samples
        self.seed, self.tol, self.method = seed, tol, method
        self.shard = shard  # hessian_chunks are this rank's rows (torch.distributed), or None
        self.previous: torch.Tensor | None = None  # last eigenvectors: the warm start
        self.previous_step = 0  # the step they were measured at
        self.expected = 3 * k  # Lanczos products we expect, for the progress total
        self.last: LanczosResult | None = None
        self._total = 0
        self.clock: Callable[[], float] = time.perf_counter  # the run's clock (seconds)

    @classmethod
    def for_run(cls, run: Any) -> CurvatureMeter:
        """The meter for a prepared ``engine.train.Run`` (its config, data, probe and evaluator)."""
        cfg, data = run.cfg, run.data
        idx = hessian_indices(run.probe_idx, data.n_train, cfg.hessian_probe, cfg.seed)

        def examples(i: torch.Tensor) -> Chunks:
            i = i.to(data.y_train.device)
            return make_chunks(data.inputs(i), data.y_train[i], run.chunk)

        sizes = clip_align_batch_sizes(parse_align_batch_sizes(cfg.align_batch_sizes), data.n_train)
        shard = run.ranks.shard_of(
            len(idx)
        )  # under torchrun: this rank's rows of the Hessian probe
        mine = idx[shard.rows] if shard is not None else idx
        return cls(run.evaluator, examples(mine), examples, data.n_train, cfg.top_k, sizes,
                   cfg.align_samples, cfg.seed, shard=shard)  # fmt: skip

    def basis(self) -> tuple[torch.Tensor, int] | None:
        """The latest finite top-k eigenvectors (n, k) and their step, for ``--decompose``."""
        return None if self.previous is None else (self.previous, self.previous_step)

    def run_pass(self, step: int, epoch: int) -> Iterator[Record]:
        """Yield progress per product, then one ``CurvatureMeasured`` (call with θ loaded)."""
        started = self.clock()
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        draws = {b: draw_batches(self.n_train, b, self.samples, gen) for b in self.sizes}
        n_align = sum(len(d) for d in draws.values())
        with hessian_operator(self.ev, self.hessian_chunks, self.method, shard=self.shard) as op:
            steps = lanczos_steps(op, self.ev.numel, self.k, tol=self.tol, seed=self.seed,
                                  start=self.previous, dtype=self.ev.flat.dtype,
                                  device=self.ev.flat.device)  # fmt: skip
            result = yield from self._progress(steps, step, epoch, n_align)
            finite = bool(torch.isfinite(result.eigenvalues).all())
            alignment = []
            if finite:
                g_full = flat_gradient(self.ev, self.examples(torch.arange(self.n_train)))
                for b, batches in draws.items():
                    values = yield from self._draws(op, batches, result, g_full, (step, epoch))
                    alignment.append(summarize(b, values))
        if finite:  # a spectrum that is not there is no warm start for the next pass
            self.previous, self.expected = result.eigenvectors, result.matvecs
            self.previous_step = step
        self.last = result
        rel = result.residuals / result.eigenvalues.abs()  # ‖Hv − λv‖ / |λ|
        now = self.clock()
        yield CurvatureMeasured(
            step=step, epoch=epoch, eigenvalues=result.eigenvalues.tolist(),
            residuals=rel.tolist(), hvps=op.products, alignment=alignment, elapsed=now,
            seconds=now - started,
        )  # fmt: skip
        if not finite:
            yield EventLogged(step, epoch, "warning", "warning",
                              f"curvature at step {step} is not finite (NaN/inf): recorded "
                              "as NaN, alignment skipped", now)  # fmt: skip

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
        grads = torch.stack([flat_gradient(self.ev, self.examples(i)) for i in batches])
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

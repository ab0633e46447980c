"""Hessian-vector products H v of the probe loss L_P, on the Evaluator's shadow model.

Why on the shadow: the trained model must stay exactly as it was (``sgdwalk.probe``), and the Evaluator
already owns a private copy whose parameters are views into one flat buffer, positioned at θ by a
single copy. Gradients are switched on for the shadow's parameters only inside ``hessian_operator``
(a context manager) and BatchNorm stops tracking running statistics there, so a product reads batch
statistics over each probe chunk (probe semantics) and writes no buffer at all.

L_P(θ) = (1/|P|) Σ_chunks Σ_i CE(f_θ(x_i), y_i), so H v = Σ_chunks ∇²[(1/|P|) Σ_i CE_i] v and a
product is accumulated chunk by chunk: memory stays bounded by one chunk's graph.

Two ways to compute one chunk's H v (both exact, chosen by ``method``):
- ``double_backward``: g = ∂L/∂θ with create_graph, then H v = ∂(g·v)/∂θ (reverse-over-reverse).
- ``forward_over_reverse``: H v = jvp(grad(L), θ; v) with ``torch.func`` on a functional call.
On CPU double backward was the faster (see engine/curvature/bench.py), so it is the default.

When the whole probe's first-order graph fits in ``cache_budget`` bytes, double backward keeps it:
g_P = Σ_chunks ∂L_c/∂θ (with graph) is built once per θ, and each product is then ONE backward
through that graph, H v = ∂(g_P·v)/∂θ, instead of forward + backward + backward per chunk.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sgdwalk.probe import Chunks, Evaluator, activations_per_example, cross_entropy_sum
from sgdwalk.shard import Shard

METHODS = ("double_backward", "forward_over_reverse")
DEFAULT_METHOD = "double_backward"
CACHE_BUDGET = 512 * 2**20  # bytes of saved activations we allow a cached first-order graph
GRAPH_FACTOR = 6  # saved tensors per activation element in a create_graph backward (measured ~4-6)


@contextmanager
def differentiable(ev: Evaluator) -> Iterator[None]:
    """Shadow parameters require grad and BatchNorm reads batch stats without updating buffers."""
    bns = [m for m in ev.shadow.modules() if isinstance(m, _BatchNorm)]
    tracked = [m.track_running_stats for m in bns]
    for p in ev.params:
        p.requires_grad_(True)
    for m in bns:
        m.track_running_stats = False  # training=True + no tracking = batch stats, no writes
    try:
        with torch.enable_grad(), _math_attention():
            yield
    finally:
        for p in ev.params:
            p.requires_grad_(False)
            p.grad = None
        for m, t in zip(bns, tracked, strict=True):
            m.track_running_stats = t


def _math_attention() -> contextlib.AbstractContextManager[None]:
    """PyTorch's fused attention kernels (flash, memory-efficient: what ``nn.TransformerEncoder``
    and Hugging Face models at their default "sdpa" call) have no double backward; the math
    kernel computes the same attention from differentiable operations. Inside a curvature pass
    only: training keeps the fast kernels."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # a torch without the selector: its attention is the math one
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def _flat(parts: Sequence[torch.Tensor | None], ev: Evaluator) -> torch.Tensor:
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(parts, ev.params, strict=True)
        ]
    )


def _split(v: torch.Tensor, ev: Evaluator) -> list[torch.Tensor]:
    """Views of a flat vector shaped like the parameters."""
    return [
        t.view_as(p)
        for t, p in zip(torch.split(v, [p.numel() for p in ev.params]), ev.params, strict=True)
    ]


def _chunk_loss(ev: Evaluator, x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    # this chunk's share of the mean: (1/|P|) Σ_{i in chunk} CE(f_θ(x_i), y_i)
    return ev.criterion(ev.shadow, x, y) / n


def examples(chunks: Chunks) -> int:
    return sum(int(y.shape[0]) for _, y in chunks)


def flat_gradient(ev: Evaluator, chunks: Chunks) -> torch.Tensor:
    """∇L over the examples in ``chunks`` at the shadow's θ (call inside ``differentiable``)."""
    n = examples(chunks)
    out = torch.zeros_like(ev.flat)
    for x, y in chunks:
        ev.checkpoint()
        out += _flat(torch.autograd.grad(_chunk_loss(ev, x, y, n), ev.params), ev)
    return out


class HessianOperator:
    """v ↦ H v for L over ``chunks`` at the shadow's current θ. Build with ``hessian_operator``."""

    def __init__(
        self, ev: Evaluator, chunks: Chunks, method: str, cache: bool, shard: Shard | None = None
    ):
        if method not in METHODS:
            raise ValueError(f"unknown HVP method {method!r}; choose from {', '.join(METHODS)}")
        if method == "forward_over_reverse" and ev.criterion is not cross_entropy_sum:
            raise ValueError("forward_over_reverse products take the default cross-entropy only")
        self.ev, self.chunks, self.method = ev, list(chunks), method
        # under torch.distributed the chunks are this rank's rows: each product is this rank's
        # share of H v over the whole probe, summed across ranks (sgdwalk.shard)
        self.shard = shard
        self.n = self.shard.total if self.shard is not None else examples(self.chunks)
        self.dim = ev.numel
        self.products = 0
        self.cached = cache and method == "double_backward" and bool(self.chunks)
        self._graph: torch.Tensor | None = self._build_graph() if self.cached else None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.ev.checkpoint()
        self.products += 1
        return self._across_ranks(self._local(v))

    def _local(self, v: torch.Tensor) -> torch.Tensor:
        """This process's H v (under torch.distributed: its rows' share, not yet summed)."""
        if self._graph is not None:
            return self._cached_hvp(v)
        if self.method == "double_backward":
            return self._double_backward(v)
        return self._forward_over_reverse(v)

    def _across_ranks(self, out: torch.Tensor) -> torch.Tensor:
        """One all_reduce per call, whichever way a rank computed its share (or none)."""
        return out if self.shard is None else self.shard.sum(out)

    def many(self, vs: torch.Tensor) -> torch.Tensor:
        """Rows H v_j for the rows of ``vs`` (M, n): one vmapped backward when cached.

        On the cached graph ``is_grads_batched`` runs the M backwards as one batched pass (about
        2.4x faster than M calls on the digits MLP); otherwise it is M ordinary products.
        """
        self.ev.checkpoint()
        self.products += len(vs)
        if self._graph is None:
            return self._across_ranks(torch.stack([self._local(v) for v in vs]))
        hv = torch.autograd.grad(self._graph, self.ev.params, grad_outputs=vs, retain_graph=True,
                                 is_grads_batched=True, allow_unused=True)  # fmt: skip
        out = torch.cat(
            [(h if h is not None else torch.zeros(len(vs), *p.shape, dtype=vs.dtype, device=vs.device)).reshape(len(vs), -1)
             for h, p in zip(hv, self.ev.params, strict=True)], dim=1,
        )  # fmt: skip
        return self._across_ranks(out)

    def release(self) -> None:
        self._graph = None

    # -- the three ways to a product

    def _build_graph(self) -> torch.Tensor:
        parts = []
        for x, y in self.chunks:
            self.ev.checkpoint()
            grads = torch.autograd.grad(
                _chunk_loss(self.ev, x, y, self.n), self.ev.params, create_graph=True
            )
            parts.append(_flat(grads, self.ev))
        return torch.stack(parts).sum(0)  # g_P = Σ_chunks ∇L_c, graph kept

    def _cached_hvp(self, v: torch.Tensor) -> torch.Tensor:
        assert self._graph is not None
        # H v = ∂(g_P · v)/∂θ, one backward through the kept first-order graph
        hv = torch.autograd.grad(
            self._graph, self.ev.params, grad_outputs=v, retain_graph=True, allow_unused=True
        )
        return _flat(hv, self.ev)

    def _double_backward(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(self.ev.flat)
        vs = _split(v, self.ev)
        for x, y in self.chunks:
            self.ev.checkpoint()
            grads = torch.autograd.grad(
                _chunk_loss(self.ev, x, y, self.n), self.ev.params, create_graph=True
            )
            gv = torch.stack([(g * u).sum() for g, u in zip(grads, vs, strict=True)]).sum()  # g_c·v
            hv = torch.autograd.grad(gv, self.ev.params, allow_unused=True)  # ∂(g_c·v)/∂θ
            out += _flat(hv, self.ev)
        return out

    def _forward_over_reverse(self, v: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, grad, jvp

        ev, names = self.ev, [name for name, _ in self.ev.shadow.named_parameters()]
        theta = ev.flat.detach()
        out = torch.zeros_like(ev.flat)
        for x, y in self.chunks:
            ev.checkpoint()

            def loss(t: torch.Tensor, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                params = dict(zip(names, _split(t, ev), strict=True))
                logits = functional_call(ev.shadow, params, (x,))
                return nn.functional.cross_entropy(logits, y, reduction="sum") / self.n

            with warnings.catch_warnings():  # torch's own forward-AD set-up scripts with jit
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
                out += jvp(grad(loss), (theta,), (v,))[1]  # d/dε ∇L(θ + ε v) at ε = 0 = H v
        return out


def graph_bytes(ev: Evaluator, chunks: Chunks) -> int:
    """Estimated bytes a cached first-order graph of all ``chunks`` holds.

    Counts the elements every leaf module outputs per example (``activations_per_example``),
    scales by the probe size and by ``GRAPH_FACTOR`` saved tensors per element.
    """
    per_example = activations_per_example(ev.shadow, *chunks[0], criterion=ev.criterion)
    return int(per_example * examples(chunks) * GRAPH_FACTOR * ev.flat.element_size())


@contextmanager
def hessian_operator(
    ev: Evaluator,
    chunks: Chunks,
    method: str = DEFAULT_METHOD,
    cache: bool | None = None,
    cache_budget: int = CACHE_BUDGET,
    shard: Shard | None = None,
) -> Iterator[HessianOperator]:
    """The operator at the shadow's current θ, valid inside the ``with`` block only.

    ``cache=None`` caches when the estimated graph fits ``cache_budget``. ``shard``: the chunks
    are this rank's rows of a probe shared across ranks (``sgdwalk.shard``). On leaving, gradients are
    off again, the cache is freed and BatchNorm tracks running statistics as before.
    """
    with differentiable(ev):
        if cache is None:
            cache = (method == "double_backward" and bool(chunks)
                     and graph_bytes(ev, chunks) <= cache_budget)  # fmt: skip
        op = HessianOperator(ev, chunks, method, cache, shard)
        try:
            yield op
        finally:
            op.release()


def batch_sharpness(
    ev: Evaluator, theta: torch.Tensor, g: torch.Tensor, chunks: Chunks
) -> torch.Tensor:
    """g_Bᵀ H_B g_B / ‖g_B‖² (Andreyev and Beneventano 2024): the curvature of the batch's own
    loss along the gradient the step uses, at θ_t. One Hessian-vector product on the batch."""
    ev.load(theta)
    with hessian_operator(ev, chunks, cache=False) as op:
        hg = op(g)
    return (g @ hg) / (g @ g)

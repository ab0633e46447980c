"""Evaluating a slice: the probe loss at the K+1 points θ_t + α_j Δ_t of one step.

A ``Slicer`` owns how a slice is evaluated, and what it learnt doing so (the mode ``auto`` chose,
the first-layer shortcut, the vmap machinery); the ``Evaluator`` it drives is only the shadow
model, moved to each point. Two ways:
- ``loop``: K passes of the shadow model, each after one fused ``add`` moves it to the next point.
- ``vmap``: the K parameter vectors are stacked and ``torch.func.vmap`` runs ``functional_call``
  over them, so each probe chunk is read once per step instead of K times and each layer becomes
  one batched kernel. On CUDA that beats K launches of small kernels; on a CPU it depends on the
  model (vmapped convolutions run as grouped convolutions, slower there).
- ``auto``: both, with and without the first-layer shortcut, timed on the first measured steps
  (``AutoMode``); the fastest is kept and the choice is a note for the session.

In both, where the first layer is a Linear or a convolution (``sgdwalk.shortcut``), the end points
are plain passes that keep its outputs and the interior points mix them instead of running it.
The end points load θ0 and θ1 exactly, so a reused L_0 is the previous step's L_K.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from sgdwalk.probe import (
    Chunks,
    Evaluator,
    activations_per_example,
    cross_entropy_sum,
    set_probe_mode,
)
from sgdwalk.shortcut import FirstLayer, find_first_layer

VMAP_PARAM_BYTES = 1 << 30  # the stacked parameter vectors of one batched pass stay under this
VMAP_ACTIVATION_BYTES = 1 << 30  # and its layer outputs (on CUDA: a quarter of the free memory)
AUTO_TRIALS = 2  # ``auto``: timed slices per mode, after one untimed (warm-up) slice of each


class Slicer:
    """Evaluates slices on an Evaluator's shadow model: ``mode`` is "loop" (one pass per point),
    "vmap" (the points in batched passes) or "auto" (both, with and without the first-layer
    shortcut, timed on the first slices; the fastest kept). A custom loss slices in "loop" mode.
    ``take_notes`` hands over what it decided, for the session."""

    def __init__(self, ev: Evaluator, mode: str = "auto") -> None:
        if mode not in SLICE_MODES:
            raise ValueError(f"slice_mode must be 'loop', 'vmap' or 'auto', got {mode!r}")
        self.ev = ev
        self.mode = mode if ev.criterion is cross_entropy_sum else "loop"
        self.use_shortcut = True  # the first-layer shortcut where it applies (sgdwalk.shortcut)
        self.first_layer: FirstLayer | bool | None = None  # None: not looked for; False: none
        self.shortcut_why = ""  # where it applies, or why it does not, once looked for
        self.notes: list[str] = []  # what the slices decided, for the session
        self._batched: BatchedLosses | None = None  # the vmap machinery, built once
        self.trials: AutoMode | None = None  # ``auto``'s trials

    def losses(
        self, theta0: torch.Tensor, theta1: torch.Tensor, alphas: Sequence[float],
        chunks: Chunks, first: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """[L_P(θ0 + α_j Δ) for j = 0..K] as one device vector (``first``: L_P(θ0), if known)."""
        if self.mode == "auto":
            return _auto(self, theta0, theta1, alphas, chunks, first)
        return _slice(self, self.mode, (theta0, theta1), alphas, chunks, first)

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    def shortcut(self, chunks: Chunks) -> FirstLayer | None:
        """The first-layer shortcut, looked for on the first slice (None: off)."""
        if not self.use_shortcut:
            return None
        if self.first_layer is None:
            found, self.shortcut_why = find_first_layer(self.ev, chunks)
            self.first_layer = found if found is not None else False
            self.notes.append(f"first-layer shortcut {self.shortcut_why}")
        return self.first_layer if isinstance(self.first_layer, FirstLayer) else None

    def batched(self) -> BatchedLosses:
        if self._batched is None:
            self._batched = BatchedLosses(self.ev)
        return self._batched


SLICE_MODES = ("auto", "loop", "vmap")


def _slice(
    sl: Slicer, mode: str, ends: tuple[torch.Tensor, torch.Tensor],
    alphas: Sequence[float], chunks: Chunks, first: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    fl = sl.shortcut(chunks)
    if fl is not None:
        return _with_shortcut(sl, fl, mode, ends, alphas, chunks, first)
    theta0, theta1 = ends
    if mode == "vmap":
        return _vmapped(sl, theta0, theta1, alphas, chunks, first)
    ev, losses = sl.ev, []
    if first is None:
        ev.load(theta0)
        first = ev.loss(chunks)
    losses.append(first)
    delta = theta1 - theta0
    for alpha in alphas[1:-1]:
        ev.load_between(theta0, delta, alpha)
        losses.append(ev.loss(chunks))
    ev.load(theta1)
    losses.append(ev.loss(chunks))
    return torch.stack(losses)


def _with_shortcut(
    sl: Slicer, fl: FirstLayer, mode: str, ends: tuple[torch.Tensor, torch.Tensor],
    alphas: Sequence[float], chunks: Chunks, first: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """The slice with the first layer's outputs at the two ends kept and mixed in between."""
    ev = sl.ev
    theta0, theta1 = ends
    if first is None:  # L_0 as a plain pass that keeps z(θ0)
        ev.load(theta0)
        with fl.recording() as outs:
            first = ev.loss(chunks)
        fl.z0 = outs
        fl.after_pass(chunks, None)
    elif fl.keeps(chunks):
        fl.roll(theta0, chunks)  # before the θ1 pass replaces z1
    later = not fl.keeps(chunks)  # z(θ0) needs the inputs the θ1 pass keeps
    ev.load(theta1)
    with fl.recording() as outs:
        last = ev.loss(chunks)
    fl.z1 = outs
    fl.after_pass(chunks, theta1)
    if later:
        fl.z0 = fl.outputs_at(theta0)
    inner = list(alphas[1:-1])
    parts = [first.reshape(1)]
    if inner and mode == "vmap":
        parts.append(_vmapped_points(sl, theta0, theta1, inner, chunks, fl))
    elif inner:
        delta = theta1 - theta0
        with fl.replaying():
            for alpha in inner:
                ev.load_between(theta0, delta, alpha)
                fl.alpha = alpha
                fl.start_pass()
                parts.append(ev.loss(chunks).reshape(1))
    parts.append(last.reshape(1))
    return torch.cat(parts)


def _vmapped(
    sl: Slicer,
    theta0: torch.Tensor,
    theta1: torch.Tensor,
    alphas: Sequence[float],
    chunks: Chunks,
    first: torch.Tensor | None,
) -> torch.Tensor:
    parts = [_vmapped_points(sl, theta0, theta1, alphas if first is None else alphas[1:], chunks)]
    if first is not None:
        parts.insert(0, first.reshape(1))
    return torch.cat(parts)


def _vmapped_points(
    sl: Slicer, theta0: torch.Tensor, theta1: torch.Tensor, alphas: Sequence[float],
    chunks: Chunks, fl: FirstLayer | None = None,
) -> torch.Tensor:  # fmt: skip
    """[L_P(θ0 + αΔ) for each α] in vmapped passes of as many points as fit; α = 0 and 1 load θ0
    and θ1 exactly, as in the looped slice. ``fl``: the first layer mixes its kept outputs."""
    batched, flat = sl.batched(), sl.ev.flat
    coeffs = torch.tensor(list(alphas), dtype=flat.dtype, device=flat.device)
    thetas = torch.addr(theta0.expand(len(alphas), -1), coeffs, theta1 - theta0)
    for i, alpha in enumerate(alphas):
        if alpha in (0.0, 1.0):
            thetas[i] = theta1 if alpha else theta0
    step = batched.points_per_pass(chunks)
    return torch.cat([
        batched.losses_at(group, chunks, None if fl is None else (fl, a))
        for group, a in zip(torch.split(thetas, step), torch.split(coeffs, step), strict=True)
    ])  # fmt: skip


Candidate = tuple[str, bool]  # a slice mode, and whether the first-layer shortcut is used


class AutoMode:
    """``--slice-mode auto``: the first measured slices go round the candidates (loop and vmap,
    each with and without the first-layer shortcut where it applies: it saves most on a large
    first layer and can cost a little on a small one), one untimed (warm-up) slice each, then
    ``AUTO_TRIALS`` timed ones; the candidate with the shortest best time is kept. Every trial is a
    real slice of a real step, so nothing is computed twice. A vmap that fails (an operation
    torch.func cannot batch) settles on loop."""

    def __init__(self, shortcut: bool) -> None:
        ways = (True, False) if shortcut else (False,)
        self.candidates: list[Candidate] = [(m, w) for w in ways for m in ("loop", "vmap")]
        self.times: dict[Candidate, list[float]] = {c: [] for c in self.candidates}
        self.slices = 0

    def next(self) -> Candidate:
        return self.candidates[self.slices % len(self.candidates)]

    def took(self, candidate: Candidate, seconds: float) -> Candidate | None:
        """Count a trial; the chosen candidate once the trials are done."""
        if self.slices >= len(self.candidates):  # the first round warms each one up
            self.times[candidate].append(seconds)
        self.slices += 1
        if min(len(t) for t in self.times.values()) < AUTO_TRIALS:
            return None
        return min(self.times, key=lambda c: min(self.times[c]))

    def message(self, chosen: Candidate) -> str:
        ranked = sorted(self.times, key=lambda c: min(self.times[c]))
        times = ", ".join(f"{_name(c)} {min(self.times[c]) * 1e3:.3g} ms" for c in ranked)
        return f"slice mode auto: {_name(chosen)}, timed on the first steps (a slice: {times})"


def _name(candidate: Candidate) -> str:
    mode, shortcut = candidate
    return f"{mode} + first-layer shortcut" if shortcut else mode


def _auto(
    sl: Slicer, theta0: torch.Tensor, theta1: torch.Tensor,
    alphas: Sequence[float], chunks: Chunks, first: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    if sl.trials is None:
        sl.trials = AutoMode(sl.shortcut(chunks) is not None)
    auto = sl.trials
    mode, sl.use_shortcut = candidate = auto.next()
    started = time.perf_counter()
    try:
        out = _slice(sl, mode, (theta0, theta1), alphas, chunks, first)
    except (RuntimeError, NotImplementedError) as err:
        if mode != "vmap":
            raise
        sl.mode, sl.use_shortcut = "loop", True
        sl.notes.append(f"slice mode auto: loop (vmap failed on this model: {err!s:.200})")
        return _slice(sl, "loop", (theta0, theta1), alphas, chunks, first)
    if out.device.type == "cuda":
        torch.cuda.synchronize(out.device)
    chosen = auto.took(candidate, time.perf_counter() - started)
    if chosen is not None:
        sl.mode, sl.use_shortcut = chosen
        sl.notes.append(auto.message(chosen))
    return out


class BatchedLosses:
    """L_P at many parameter vectors in one vmapped pass per chunk, on a functional copy of the
    Evaluator's shadow (BatchNorm without running buffers: see ``_functional_copy``)."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        self.net = _functional_copy(ev.shadow)
        self.shapes = [(name, p.shape) for name, p in ev.shadow.named_parameters()]
        self._per_pass: dict[int, int] = {}  # points per pass, by probe chunk rows

    @torch.no_grad()
    def losses_at(
        self, thetas: torch.Tensor, chunks: Chunks,
        lerp: tuple[FirstLayer, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """[L_P(θ) for each row θ of ``thetas``] in one vmapped pass per probe chunk.

        ``lerp``: the first-layer shortcut and each row's α (the layer then mixes its kept
        outputs instead of running).
        """
        from torch.func import functional_call, vmap

        net, n_points = self.net, thetas.shape[0]
        params, offset = {}, 0
        for name, shape in self.shapes:
            n = shape.numel()
            params[name] = thetas[:, offset : offset + n].view(n_points, *shape)
            offset += n
        buffers = dict(net.named_buffers())
        fl, coeffs = lerp if lerp is not None else (None, thetas.new_zeros(n_points))
        replay = fl.replay_on(net) if fl is not None else None

        def logits_at(theta: dict[str, torch.Tensor], a: torch.Tensor,
                      x: torch.Tensor) -> torch.Tensor:  # fmt: skip
            if fl is not None:
                fl.alpha = a  # this point's α, read by the replaying layer
            return functional_call(net, (theta, buffers), (x,))

        batched = vmap(logits_at, in_dims=(0, 0, None))
        total = torch.zeros(n_points, dtype=thetas.dtype, device=thetas.device)
        count = 0
        try:
            for i, (x, y) in enumerate(chunks):
                self.ev.checkpoint()
                with replay(i) if replay is not None else contextlib.nullcontext(), _quiet():
                    logits = batched(params, coeffs, x)  # [points, chunk, classes]
                ce = nn.functional.cross_entropy(
                    logits.flatten(0, 1), y.repeat(n_points), reduction="none"
                )
                total += ce.view(n_points, -1).sum(1)
                count += y.shape[0]
        finally:
            if fl is not None:
                fl.alpha = 0.0
        return total / count

    def points_per_pass(self, chunks: Chunks) -> int:
        """How many slice points one vmapped pass takes: the stacked parameters and the layer
        outputs of a chunk at every point must fit their budgets. Worked out once per chunk size
        (one forward on two examples, and on CUDA one free-memory query), not every step."""
        rows = max(x.shape[0] for x, _ in chunks)
        if rows not in self._per_pass:
            ev = self.ev
            size = ev.flat.element_size()
            by_params = VMAP_PARAM_BYTES // (ev.numel * size)
            per_example = activations_per_example(ev.shadow, *chunks[0])
            budget = VMAP_ACTIVATION_BYTES
            if ev.flat.device.type == "cuda":
                budget = max(budget, torch.cuda.mem_get_info(ev.flat.device)[0] // 4)
            by_activations = budget // max(1.0, rows * per_example * size)
            self._per_pass[rows] = max(1, int(min(by_params, by_activations)))
        return self._per_pass[rows]


def _quiet() -> contextlib.ExitStack:
    """No warning for a layer that vmap runs point by point: still right, and the ``auto``
    trials time it (torch says "There is a performance drop ...")."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", "There is a performance drop")
    return stack


def _functional_copy(shadow: nn.Module) -> nn.Module:
    """A copy of the shadow for ``functional_call``: BatchNorm without running buffers.

    In probe mode BatchNorm normalises with batch statistics, which under ``vmap`` are each point's
    own; running buffers would be updated in place, which ``vmap`` refuses, and
    ``torch.func.replace_all_batch_norm_modules_`` removes them. The copy's own parameter values
    are never read (every call passes them all), so they are freed.
    """
    from torch.func import replace_all_batch_norm_modules_

    net = copy.deepcopy(shadow)
    replace_all_batch_norm_modules_(net)
    set_probe_mode(net)
    for p in net.parameters():
        p.data = p.data.new_empty(0)
    return net

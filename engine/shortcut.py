"""The first-layer shortcut: a slice's first layer run once or twice per step instead of K times.

A first ``Linear`` or convolution is affine in its own weights, and what it reads (the probe's
inputs after parameter-free reshaping) does not depend on θ. So at θ_t + αΔ_t its output is exactly

    z_α = (1 − α)·z(θ_t) + α·z(θ_{t+1}),

and a slice point needs ``torch.lerp`` of two kept outputs in place of a matrix product or a
convolution over the probe. The slice (``sgdwalk.slicing``) runs its end points as plain passes
that keep the layer's input and output per probe chunk, then the interior points with the layer
replaying the mix. z(θ_{t+1}) of one step is z(θ_t) of the next, kept while θ and the probe chunks
are the same objects, so a measured step runs the first layer once; otherwise z(θ_t) comes from
the kept inputs in one evaluation of that layer alone.

When it applies (``find_first_layer``, once per slicer, on two probe examples):
- the first leaf module with parameters that the forward calls is an ``nn.Linear`` or a convolution,
  called once per forward, with one tensor;
- its input stays the same when every other parameter changes (it would not, had the forward read
  any of them, or the layer's own weights, before the layer);
- its inputs and both outputs for the whole probe set fit ``SHORTCUT_BYTES``.
Otherwise every layer runs at every point, as before. BatchNorm after the layer is unaffected: in
probe mode it normalises the mixed z with batch statistics, as it would the directly computed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from sgdwalk.probe import Chunks, Evaluator

SHORTCUT_BYTES = 1 << 30  # the kept inputs and outputs of the first layer over the probe set
LINEAR_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)

Forward = Callable[[torch.Tensor], torch.Tensor]


class FirstLayer:
    """The shadow's first layer, with what the slice keeps of it: per probe chunk its input and
    its outputs at the two ends of the step being sliced."""

    def __init__(self, ev: Evaluator, name: str, layer: nn.Module) -> None:
        self.name, self.layer = name, layer
        offsets, offset = {}, 0
        for p in ev.params:  # the flat buffer's order
            offsets[id(p)] = offset
            offset += p.numel()
        self.spans = {k: (offsets[id(p)], p.numel(), p.shape) for k, p in layer.named_parameters()}
        self.inputs: list[torch.Tensor] = []  # what the layer read, per chunk (θ-independent)
        self.z0: list[torch.Tensor] = []  # its outputs at θ_t and θ_{t+1}, per chunk
        self.z1: list[torch.Tensor] = []
        self._for: tuple[object, ...] = ()  # the chunks ``inputs`` belong to (held: no id reuse)
        self._end: torch.Tensor | None = None  # the θ whose outputs ``z1`` holds
        self.alpha: float | torch.Tensor = 0.0
        self._calls = 0
        self._out: dict[torch.Size, torch.Tensor] = {}  # the mixed outputs, by chunk shape

    # -- the end points

    def keeps(self, chunks: Chunks) -> bool:
        """Whether the kept inputs are those of ``chunks`` (the same objects)."""
        key = _key(chunks)
        return len(key) == len(self._for) and all(
            a is b for a, b in zip(key, self._for, strict=True)
        )

    def ends_kept(self, theta0: torch.Tensor, chunks: Chunks) -> bool:
        """Whether z(θ_t) is the kept output of the previous step's θ_{t+1}."""
        end = self._end
        if end is None or not self.keeps(chunks):
            return False
        return theta0 is end or bool(torch.equal(theta0, end))

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """A plain pass that yields the list it fills with the layer's output per chunk, and keeps
        the layer's inputs once it completes."""
        original = self.layer.forward
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []

        def record(x: torch.Tensor) -> torch.Tensor:
            out = original(x)
            inputs.append(x)
            outputs.append(out.clone())  # a copy: an in-place ReLU after the layer would change it
            return out

        with _replaced(self.layer, record):
            yield outputs
        self.inputs = inputs

    def after_pass(self, chunks: Chunks, theta1: torch.Tensor | None) -> None:
        """Note what the outputs just recorded belong to (``theta1``: z1's θ, when it was z1)."""
        self._for = _key(chunks)
        if theta1 is not None:
            self._end = theta1

    def outputs_at(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """The layer's output at θ on each kept chunk input: the layer alone, not the network."""
        from torch.func import functional_call

        params = {k: theta[o : o + n].view(shape) for k, (o, n, shape) in self.spans.items()}
        with torch.no_grad():
            return [functional_call(self.layer, params, (x,)) for x in self.inputs]

    def roll(self, theta0: torch.Tensor, chunks: Chunks) -> None:
        """z0 for this step: the previous step's z1 when θ_t is its θ_{t+1}, else evaluated."""
        if self.ends_kept(theta0, chunks):
            self.z0 = self.z1
        else:
            self.z0 = self.outputs_at(theta0)

    # -- the interior points

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """Passes in which the layer returns lerp(z0, z1, ``self.alpha``), chunk by chunk."""

        def replay(x: torch.Tensor) -> torch.Tensor:
            i = self._calls
            self._calls += 1
            if i >= len(self.z0) or x.shape != self.inputs[i].shape:
                raise RuntimeError("first-layer shortcut: the probe chunks changed in a slice")
            z0 = self.z0[i]
            out = self._out.get(z0.shape)
            if out is None:
                out = self._out[z0.shape] = torch.empty_like(z0)
            # into a buffer reused from pass to pass: a fresh one is a fresh page-faulted block
            # on a CPU, which cost four times the mix itself on a CNN's first layer (measured)
            return torch.lerp(z0, self.z1[i], self.alpha, out=out)

        try:
            with _replaced(self.layer, replay):
                yield
        finally:
            self._out.clear()

    def start_pass(self) -> None:
        self._calls = 0

    def replay_on(self, net: nn.Module) -> Callable[[int], contextlib.AbstractContextManager[None]]:
        """For a vmapped copy ``net`` of the shadow: a context per chunk ``i`` in which its copy of
        the layer returns lerp(z0[i], z1[i], ``self.alpha``) (a batched α under vmap)."""
        layer = dict(net.named_modules())[self.name]

        def chunk(i: int) -> contextlib.AbstractContextManager[None]:
            return _replaced(layer, lambda _x: torch.lerp(self.z0[i], self.z1[i], self.alpha))

        return chunk


def find_first_layer(ev: Evaluator, chunks: Chunks) -> tuple[FirstLayer | None, str]:
    """The shortcut for ``ev`` on probes like ``chunks`` (None where it does not apply), and
    in words why or where."""
    if not chunks:
        return None, "off: no probe examples"
    from sgdwalk.batches import index_batch

    x, y = chunks[0]
    n = min(2, int(y.shape[0]))
    x, y = index_batch(x, slice(0, n)), y[:n]
    try:  # two forward passes; a model that will not take two examples goes without
        calls = _first_calls(ev, x, y)
        layer, inp = calls[0] if calls else (None, None)
        independent = inp is not None and _independent(ev, layer, x, y, inp)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        return None, f"off: two examples did not run through the model ({err!s:.120})"
    if layer is None:
        return None, "off: the forward calls no module with parameters"
    kind = type(layer).__name__
    if not isinstance(layer, LINEAR_LAYERS):
        return None, f"off: the first layer is {_a(kind)}, not a Linear or a convolution"
    if sum(m is layer for m, _ in calls) != 1 or inp is None:
        return None, f"off: the first layer ({kind}) is not called once with one tensor"
    if not independent:
        return None, f"off: the first layer's input ({kind}) depends on parameters"
    name = next(k for k, m in ev.shadow.named_modules() if m is layer)
    rows = sum(int(c[1].shape[0]) for c in chunks)
    with torch.no_grad():
        per_row = (inp.numel() + 2 * layer(inp).numel()) / n
    size = rows * per_row * inp.element_size()
    if size > SHORTCUT_BYTES:
        return (
            None,
            f"off: the first layer's outputs over the probe need {size / 2**30:.1f} GiB",
        )
    return FirstLayer(ev, name, layer), f"on: the first layer {name or 'model'!r} ({kind})"


@contextlib.contextmanager
def _replaced(layer: nn.Module, forward: Forward) -> Iterator[None]:
    """``layer.forward`` is ``forward`` inside the block (hooks still run); restored after."""
    layer.forward = forward
    try:
        yield
    finally:
        del layer.forward


def _a(noun: str) -> str:
    """ "an Embedding", "a Linear": the article by the noun's first letter."""
    return f"{'an' if noun[:1].upper() in 'AEIOU' else 'a'} {noun}"


def _key(chunks: Chunks) -> tuple[object, ...]:
    return (chunks, *(y for _, y in chunks))


def _first_calls(ev: Evaluator, x: Any, y: torch.Tensor) -> list[tuple[nn.Module, Any]]:
    """The leaf modules with parameters, in the order one forward calls them, each with its single
    tensor input (None when it took anything else)."""
    calls: list[tuple[nn.Module, Any]] = []

    def hook(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        one = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
        calls.append((m, args[0] if one else None))

    owners = [
        m
        for m in ev.shadow.modules()  # leaves: a container's own parameters may be read
        if next(m.parameters(recurse=False), None) is not None  # anywhere in its forward
        and next(m.children(), None) is None
    ]  # (``_independent`` catches a read before)
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in owners]
    try:
        with torch.no_grad():
            ev.criterion(ev.shadow, x, y)
    finally:
        for h in handles:
            h.remove()
    return calls


def _independent(ev: Evaluator, layer: nn.Module | None, x: Any, y: torch.Tensor,
                 seen: torch.Tensor) -> bool:  # fmt: skip
    """Whether the layer's input stays ``seen`` when every parameter changes (its own included:
    the forward may not read them before calling it)."""
    kept = ev.flat.clone()
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        got.append(args[0].clone())

    assert layer is not None  # it took ``seen``
    handle = layer.register_forward_pre_hook(hook)
    try:
        gen = torch.Generator(device=ev.flat.device).manual_seed(0)
        noise = torch.randn(ev.flat.shape, generator=gen, device=ev.flat.device)
        ev.flat.add_(noise.to(ev.flat.dtype), alpha=0.5).mul_(1.5)
        with torch.no_grad():
            ev.criterion(ev.shadow, x, y)
    finally:
        handle.remove()
        ev.flat.copy_(kept)
    return len(got) == 1 and got[0].shape == seen.shape and bool(torch.equal(got[0], seen))

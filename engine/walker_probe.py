"""The Walker's probe: taken once from whatever the loop hands in (tensors, a batch, a Dataset, a
DataLoader), and the private copy of the model that evaluates it (``sgdwalk.probe.Evaluator``).
The probe is also the Walker's pool: its alignment draws come from it (``sgdwalk.probe_set``).

Why a forward of the probe when the Walker is made: a probe the model or the loss cannot take
(wrong shapes, labels out of the model's range, a ``loss_fn`` that fails or returns no single
number) is misuse the script can be told about before training starts, as one ``ConfigError``
naming ``probe`` or ``loss_fn``, instead of a failure at the first measured step. The same
forward shows whether the model draws from the global RNG in the probe's forward, the one case
where the Walker must save and restore the RNG state around its work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sgdwalk.batches import (
    LossFn,
    SummedLoss,
    batch_size_of,
    index_batch,
    make_probe_chunks,
    take_probe,
    tensors_of,
    to_device,
)
from sgdwalk.errors import ConfigError
from sgdwalk.probe import CHUNK, Evaluator, probe_chunk
from sgdwalk.probe_set import ProbeSet
from sgdwalk.shard import Peers


class _AnyBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm for inputs of any rank: what a ``SyncBatchNorm`` becomes in the private copy."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        pass


def without_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module``, or a copy with each ``SyncBatchNorm`` made a plain BatchNorm (same parameters
    and buffers, in the same order): a probe chunk is normalised on its own rank, never across
    ranks, and the private copy must make no collective calls of its own."""
    import copy

    if not any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
        return module
    out = copy.deepcopy(module)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.SyncBatchNorm):
                plain = _AnyBatchNorm(child.num_features, child.eps, child.momentum,
                                      child.affine, child.track_running_stats)  # fmt: skip
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain.to(next(child.parameters(), child.running_mean)))
    return out


def walker_probe(
    module: nn.Module, probe: Any, loss_fn: LossFn | None, size: int, chunk: int | None,
    batch_size: int | None,
) -> tuple[Evaluator, ProbeSet, bool]:  # fmt: skip
    """The evaluator (a private copy of the model, the loss as a sum over a chunk), the probe
    set and whether the model draws from the global RNG in the probe's forward (``check``). The
    probe set: the first ``size`` examples of ``probe``, which is also the pool the alignment
    draws come from. ``chunk``: examples per forward pass; by default the training batch
    (``batch_size``, else ``CHUNK``) for a model with BatchNorm, a size for speed without. Under
    ``torch.distributed`` each rank takes a shard of the rows (``sgdwalk.shard``), and every rank
    must hand in the same probe. A probe the model or the loss cannot take is a ``ConfigError``
    naming ``probe`` or ``loss_fn``."""
    device = next(module.parameters()).device
    try:
        with torch.no_grad():
            batch = to_device(take_probe(probe, size), device)
        n = batch_size_of(batch)
        if n == 0:
            raise ConfigError("probe: it has no examples")
        two = make_probe_chunks(index_batch(batch, slice(0, 2)), loss_fn, 2)[0]
        criterion = SummedLoss(loss_fn) if loss_fn is not None else None
        ev = Evaluator(without_sync_batchnorm(module), criterion=criterion)
        with _rng_kept(device) as drew:
            check(ev, batch, loss_fn, chunk or batch_size or CHUNK)
            if chunk is None:
                chunk = probe_chunk(ev, two, batch_size or CHUNK)
    except ConfigError as e:
        raise e if str(e).startswith("Walker: ") else ConfigError(f"Walker: {e}") from None
    peers = Peers.find(device)
    if peers is not None and not peers.same_everywhere(_checksum(batch)):
        raise ConfigError("Walker: probe: it differs between ranks; give every rank the same "
                          "probe (not a DistributedSampler's part)")  # fmt: skip
    rows = torch.arange(n, device=device)
    return ev, ProbeSet(lambda idx: index_batch(batch, idx.to(device)), n, rows, chunk,
                        loss_fn=loss_fn, peers=peers), drew[0]  # fmt: skip


@torch.no_grad()
def check(ev: Evaluator, batch: Any, loss_fn: LossFn | None, chunk: int) -> None:
    """One forward and loss of the probe's first examples through the private copy: two, else
    a whole chunk (a model may take batches of some sizes only). With the default loss the labels
    are checked against the model's class scores first (an index out of range is a device-side
    assert on a GPU, which no later code could recover from)."""
    error: Exception | None = None
    for n in dict.fromkeys((2, max(chunk, 2))):
        part = index_batch(batch, slice(0, n))
        try:
            value = _first_loss(ev, batch, part, loss_fn)
        except (ConfigError, torch.OutOfMemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - the model's or the loss's own error, said below
            error = e
            continue
        if not (isinstance(value, int | float) or isinstance(value, torch.Tensor)
                and value.numel() == 1):  # fmt: skip
            got = (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
                   else f"a {type(value).__name__}")  # fmt: skip
            raise ConfigError(f"loss_fn: must return the batch's mean loss, one number; got {got}")
        return
    assert error is not None
    why = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    if loss_fn is None:
        raise ConfigError(f"probe: the model and cross-entropy cannot take it ({why:.300}); "
                          "give inputs and class labels the model takes, or a loss_fn")  # fmt: skip
    raise ConfigError(f"loss_fn: loss_fn(model, probe) failed on the probe's first examples "
                      f"({why:.300})")  # fmt: skip


def _first_loss(ev: Evaluator, batch: Any, part: Any, loss_fn: LossFn | None) -> Any:
    if loss_fn is not None:
        return loss_fn(ev.shadow, part)
    x, y = part
    out = ev.shadow(x)
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ConfigError("probe: the model does not return class scores (N x classes) for "
                          "cross-entropy; give a loss_fn(model, batch)")  # fmt: skip
    labels = batch[1]
    if not labels.is_floating_point():  # class indices (floats are class probabilities)
        classes = out.shape[1]
        bad = ((labels < 0) & (labels != IGNORED)) | (labels >= classes)
        if bad.any():
            raise ConfigError(f"probe: labels must be class indices from 0 to {classes - 1} "
                              f"(the model gives {classes} class scores), got "
                              f"{labels[bad][0].item()}")  # fmt: skip
    return nn.functional.cross_entropy(out, y, reduction="sum")


IGNORED = -100  # cross-entropy's ignore_index: a label that counts for nothing


@contextlib.contextmanager
def _rng_kept(device: torch.device) -> Iterator[list[bool]]:
    """The global RNG states as they were before the block; ``[True]`` when the block drew from
    them (the model's forward draws random numbers in eval mode), else ``[False]``. Restored only
    when drawn from, so a thread drawing meanwhile is left alone in the usual case."""
    cuda = device.type == "cuda"
    before = [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if cuda else [])]
    drew = [False]
    try:
        yield drew
    finally:
        after = [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if cuda else [])]
        drew[0] = not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        if drew[0]:
            torch.set_rng_state(before[0])
            if cuda:
                torch.cuda.set_rng_state(before[1], device)


def _checksum(batch: Any) -> float:
    return float(sum(t.double().sum() for t in tensors_of(batch)))

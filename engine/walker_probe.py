"""The Walker's probe: taken once from whatever the loop hands in (tensors, a batch, a Dataset, a
DataLoader), and the private copy of the model that evaluates it (``sgdwalk.probe.Evaluator``).
The probe is also the Walker's pool: its alignment draws come from it (``sgdwalk.probe_set``)."""

from __future__ import annotations

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
) -> tuple[Evaluator, ProbeSet]:  # fmt: skip
    """The evaluator (a private copy of the model, the loss as a sum over a chunk) and the probe
    set: the first ``size`` examples of ``probe``, which is also the pool the alignment draws come
    from. ``chunk``: examples per forward pass; by default the training batch (``batch_size``, else
    ``CHUNK``) for a model with BatchNorm, a size for speed without. Under ``torch.distributed``
    each rank takes a shard of the rows (``sgdwalk.shard``), and every rank must hand in the same
    probe."""
    device = next(module.parameters()).device
    with torch.no_grad():
        batch = to_device(take_probe(probe, size), device)
    n = batch_size_of(batch)
    criterion = SummedLoss(loss_fn) if loss_fn is not None else None
    ev = Evaluator(without_sync_batchnorm(module), criterion=criterion)
    if chunk is None:
        two = make_probe_chunks(index_batch(batch, slice(0, 2)), loss_fn, 2)[0]
        chunk = probe_chunk(ev, two, batch_size or CHUNK)
    peers = Peers.find(device)
    if peers is not None and not peers.same_everywhere(_checksum(batch)):
        raise ConfigError("probe: it differs between ranks; give every rank the same "
                          "probe (not a DistributedSampler's part)")  # fmt: skip
    rows = torch.arange(n, device=device)
    return ev, ProbeSet(lambda idx: index_batch(batch, idx.to(device)), n, rows, chunk,
                        loss_fn=loss_fn, peers=peers)  # fmt: skip


def _checksum(batch: Any) -> float:
    return float(sum(t.double().sum() for t in tensors_of(batch)))

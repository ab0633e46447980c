"""The Walker's probe: taken once, chunked, sharded across ranks, and the private copy of the
model that evaluates it (``sgdwalk.probe.Evaluator``)."""

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


class ProbeSetup:
    """The probe as the Walker uses it: all of it (alignment draws), this rank's chunks (slices
    and Hessian products; under ``torch.distributed`` a shard, see ``sgdwalk.shard``), and the
    evaluator: a private copy of the model with the loss as a sum over a chunk."""

    def __init__(self, module: nn.Module, probe: Any, loss_fn: LossFn | None, size: int,
                 chunk: int | None, slice_mode: str) -> None:  # fmt: skip
        from sgdwalk.probe import Evaluator, speed_chunk
        from sgdwalk.shard import shard_for

        device = next(module.parameters()).device
        with torch.no_grad():
            self.probe = to_device(take_probe(probe, size), device)
        self.n = batch_size_of(self.probe)
        criterion = SummedLoss(loss_fn) if loss_fn is not None else None
        mode = "loop" if loss_fn is not None else slice_mode
        self.evaluator = Evaluator(without_sync_batchnorm(module), slice_mode=mode,
                                   criterion=criterion)  # fmt: skip
        if chunk is None:  # no BatchNorm: a size for speed alone, from two probe examples run
            two = make_probe_chunks(index_batch(self.probe, slice(0, 2)), loss_fn, 2)[0]
            ev = self.evaluator  # through the private copy: the user's model stays untouched
            chunk = speed_chunk(ev.shadow, *two, ev.criterion)
        self.loss_fn, self.chunk = loss_fn, chunk
        self.shard = shard_for(self.n, device, unit=chunk)
        mine = self.probe
        if self.shard is not None:
            if not self.shard.same_everywhere(_checksum(self.probe)):
                raise ConfigError("probe: it differs between ranks; give every rank the same "
                                  "probe (not a DistributedSampler's part)")  # fmt: skip
            mine = index_batch(self.probe, self.shard.rows)
        self.chunks = make_probe_chunks(mine, loss_fn, chunk) if batch_size_of(mine) else []
        self.evaluator.shard = self.shard

    def examples(self, idx: torch.Tensor) -> list[tuple[Any, torch.Tensor]]:
        """Probe examples ``idx`` (of the whole probe) as evaluator chunks."""
        part = index_batch(self.probe, idx.to(next(tensors_of(self.probe)).device))
        return make_probe_chunks(part, self.loss_fn, self.chunk)


def _checksum(batch: Any) -> float:
    return float(sum(t.double().sum() for t in tensors_of(batch)))

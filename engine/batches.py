"""Batches of any shape, and the probe set a user's loop hands the Walker.

A user's data comes as tensors ``(x, y)``, a ``Dataset``, a ``DataLoader``, or batches that are dicts
of tensors (Hugging Face) or tuples of them. The probe is taken once from any of these, and chunked
for the evaluator, with the few tree operations below (size, index, concatenate, move).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from sgdwalk.errors import ConfigError

LossFn = Callable[[nn.Module, Any], torch.Tensor]  # loss_fn(model, batch) -> mean loss


def unwrap(model: nn.Module) -> nn.Module:
    """The eager module under ``DistributedDataParallel``/``DataParallel`` and ``torch.compile``."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            inner = model.module
        if isinstance(inner, nn.Module):
            model = inner
        else:
            return model


# -- batches of any shape: tensors, tuples/lists and dicts of them (what DataLoaders yield)


def batch_size_of(batch: Any) -> int:
    """Examples in a batch: the first dimension of its first tensor with one."""
    for t in _tensors(batch):
        if t.dim():
            return int(t.shape[0])
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}")


def index_batch(batch: Any, idx: slice | torch.Tensor) -> Any:
    """The examples ``idx`` of a batch; non-tensor leaves are kept as they are."""
    if isinstance(batch, torch.Tensor):
        return batch[idx] if batch.dim() else batch
    if isinstance(batch, Mapping):
        return {k: index_batch(v, idx) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(index_batch(v, idx) for v in batch)
    return batch


def concat_batches(batches: list[Any]) -> Any:
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches) if first.dim() else first
    if isinstance(first, Mapping):
        return {k: concat_batches([b[k] for b in batches]) for k in first}
    if isinstance(first, tuple | list):
        return type(first)(concat_batches(list(parts)) for parts in zip(*batches, strict=True))
    return first


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def take_probe(probe: Any, n: int) -> Any:
    """The first ``n`` examples of tensors ``(x, y)``, a batch, a ``Dataset`` or a ``DataLoader``."""
    from torch.utils.data import DataLoader, Dataset, default_collate

    if isinstance(probe, DataLoader):
        parts, have = [], 0
        for batch in probe:
            parts.append(batch)
            have += batch_size_of(batch)
            if have >= n:
                break
        if not parts:
            raise ConfigError("probe: the DataLoader yielded no batches")
        whole = concat_batches(parts)
    elif isinstance(probe, Dataset) and not isinstance(probe, torch.Tensor):
        size = len(probe)  # type: ignore[arg-type]
        if size == 0:
            raise ConfigError("probe: the Dataset is empty")
        whole = default_collate([probe[i] for i in range(min(n, size))])
    else:
        whole = probe
    try:
        have = batch_size_of(whole)
    except TypeError as e:
        raise ConfigError(f"probe: {e}; give tensors (x, y), a Dataset or a DataLoader") from None
    return index_batch(whole, slice(0, min(n, have)))


class SummedLoss:
    """A loss over one probe chunk, summed over its examples (what the Evaluator adds up).

    Chunks are ``(batch, y)``: with the default loss, the inputs and their labels; with the user's
    ``loss_fn(model, batch)`` (a mean over the batch), the whole batch and a counter whose length is
    the chunk's example count.
    """

    def __init__(self, loss_fn: LossFn) -> None:
        self.loss_fn = loss_fn

    def __call__(self, module: nn.Module, batch: Any, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(module, batch) * y.shape[0]


def make_probe_chunks(
    probe: Any, loss_fn: LossFn | None, size: int
) -> list[tuple[Any, torch.Tensor]]:
    n = batch_size_of(probe)
    if loss_fn is None:
        if not (isinstance(probe, tuple | list) and len(probe) == 2):
            raise ConfigError("probe: without a loss_fn the probe must be (inputs, labels)")
        x, y = probe
        return list(zip(torch.split(x, size), torch.split(y, size), strict=True))
    device = next((t.device for t in _tensors(probe)), torch.device("cpu"))
    counter = torch.arange(n, device=device)
    return [(index_batch(probe, slice(i, i + size)), counter[i : i + size])
            for i in range(0, n, size)]  # fmt: skip


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for v in batch.values():
            yield from _tensors(v)
    elif isinstance(batch, tuple | list):
        for v in batch:
            yield from _tensors(v)


# -- the Walker's probe: taken, chunked, sharded, and the private copy that evaluates it


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
                 chunk: int, slice_mode: str) -> None:  # fmt: skip
        from sgdwalk.config import choose_slice_mode
        from sgdwalk.probe import Evaluator, has_convolutions
        from sgdwalk.shard import shard_for

        device = next(module.parameters()).device
        with torch.no_grad():
            self.probe = to_device(take_probe(probe, size), device)
        self.n = batch_size_of(self.probe)
        self.loss_fn, self.chunk = loss_fn, chunk
        self.shard = shard_for(self.n, device)
        mine = self.probe
        if self.shard is not None:
            if not self.shard.same_everywhere(_checksum(self.probe)):
                raise ConfigError("probe: it differs between ranks; give every rank the same "
                                  "probe (not a DistributedSampler's part)")  # fmt: skip
            mine = index_batch(self.probe, self.shard.rows)
        self.chunks = make_probe_chunks(mine, loss_fn, chunk) if batch_size_of(mine) else []
        mode = "loop" if loss_fn is not None else slice_mode
        mode = choose_slice_mode(mode, device.type, has_convolutions(module))
        criterion = SummedLoss(loss_fn) if loss_fn is not None else None
        self.evaluator = Evaluator(without_sync_batchnorm(module), slice_mode=mode,
                                   criterion=criterion)  # fmt: skip
        self.evaluator.shard = self.shard

    def examples(self, idx: torch.Tensor) -> list[tuple[Any, torch.Tensor]]:
        """Probe examples ``idx`` (of the whole probe) as evaluator chunks."""
        part = index_batch(self.probe, idx.to(next(_tensors(self.probe)).device))
        return make_probe_chunks(part, self.loss_fn, self.chunk)


def _checksum(batch: Any) -> float:
    return float(sum(t.double().sum() for t in _tensors(batch)))

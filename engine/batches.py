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
    for t in tensors_of(batch):
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


def pieces(t: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """``torch.split(t, size)``, a last piece of one row joined to the one before it (BatchNorm
    cannot normalise a batch of one example)."""
    out = torch.split(t, size)
    if len(out) > 1 and len(out[-1]) == 1:
        out = (*out[:-2], torch.cat(out[-2:]))
    return out


def make_chunks(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The probe's chunks of ``size`` examples (a last one of one example joins the one before)."""
    return list(zip(pieces(x, size), pieces(y, size), strict=True))


def make_probe_chunks(
    probe: Any, loss_fn: LossFn | None, size: int
) -> list[tuple[Any, torch.Tensor]]:
    n = batch_size_of(probe)
    if loss_fn is None:
        if not (isinstance(probe, tuple | list) and len(probe) == 2):
            raise ConfigError("probe: without a loss_fn the probe must be (inputs, labels)")
        x, y = probe
        return make_chunks(x, y, size)
    device = next((t.device for t in tensors_of(probe)), torch.device("cpu"))
    counter = torch.arange(n, device=device)
    return [(index_batch(probe, slice(int(c[0]), int(c[-1]) + 1)), c)
            for c in pieces(counter, size)]  # fmt: skip


def tensors_of(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for v in batch.values():
            yield from tensors_of(v)
    elif isinstance(batch, tuple | list):
        for v in batch:
            yield from tensors_of(v)

"""The probe set as one process uses it: its rows, this rank's chunks, and the pool of examples the
alignment draws come from.

Why one type for both clients: the built-in trainer draws its probe from the training split and a
user's loop hands the Walker a batch, but everything downstream (slices, Hessian products,
alignment draws, the shard each rank evaluates) asks the same questions. So both describe their
data as a *pool* (``pool(idx)`` returns the examples ``idx`` as a batch: the training split, or
the Walker's probe itself) and the probe as rows of it, and the chunks are made here, once.

Under ``torch.distributed`` each rank evaluates a shard of the rows in whole chunks
(``sgdwalk.shard``); ``chunks`` and ``hessian_chunks`` are this rank's, ``whole`` is every row.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import torch

from sgdwalk.batches import LossFn, make_probe_chunks
from sgdwalk.probe import Chunks
from sgdwalk.shard import Peers, Shard

Pool = Callable[[torch.Tensor], Any]  # row indices -> those examples as one batch


class ProbeSet:
    """``rows``: the probe's rows of the pool (``pool_size`` examples); ``hessian_rows``: the
    Hessian's, when they differ; ``fixed``: False when each step slices its own batch (the rows
    then serve the Hessian and the epoch summary); ``chunk``: examples per forward pass."""

    def __init__(
        self, pool: Pool, pool_size: int, rows: torch.Tensor, chunk: int, *,
        loss_fn: LossFn | None = None, peers: Peers | None = None,
        hessian_rows: torch.Tensor | None = None, fixed: bool = True,
    ) -> None:  # fmt: skip
        self.pool, self.pool_size, self.rows, self.chunk = pool, pool_size, rows, chunk
        self.loss_fn, self.fixed, self.peers = loss_fn, fixed, peers
        self.size = len(rows)
        self.shard = peers.shard(self.size, chunk) if peers is not None else None
        self.chunks = self._mine(rows, self.shard)  # this rank's rows of the probe
        if hessian_rows is None:
            self.hessian_rows, self.hessian_shard = rows, self.shard
            self.hessian_chunks = self.chunks
        else:
            self.hessian_rows = hessian_rows
            self.hessian_shard = peers.shard(len(hessian_rows), chunk) if peers else None
            self.hessian_chunks = self._mine(hessian_rows, self.hessian_shard)

    @property
    def slice_chunks(self) -> Chunks | None:
        """What a step's slice is measured on: this rank's chunks, or None (each step's batch)."""
        return self.chunks if self.fixed else None

    @cached_property
    def whole(self) -> Chunks:
        """Every row of the probe, on every rank (the epoch summary's training loss)."""
        return self.chunks if self.shard is None else self.examples(self.rows)

    def examples(self, idx: torch.Tensor) -> Chunks:
        """The pool's examples ``idx`` as evaluator chunks (alignment draws, a step's batch)."""
        return self.chunks_of(self.pool(idx)) if len(idx) else []

    def chunks_of(self, batch: Any) -> Chunks:
        return make_probe_chunks(batch, self.loss_fn, self.chunk)

    def _mine(self, rows: torch.Tensor, shard: Shard | None) -> Chunks:
        return self.examples(rows if shard is None else rows[shard.rows])

"""The built-in trainer on several processes (``sgdwalk run --nproc N``, under torchrun).

Every rank holds the same data, the same seeded generator and so the same global batches; each
takes a contiguous part of each global batch, and ``DistributedDataParallel`` averages the
gradients. Each rank back-propagates its part's loss *sum* times W/N (N the global batch), so DDP's
mean over the W ranks is exactly the gradient of the global batch's mean loss, even when the parts
are uneven; the batch loss is one all_reduce of the sums. The probe is sharded (``sgdwalk.shard``),
so a slice costs about 1/W per rank. The configured batch size stays the global one, as in the
paper. Rank 0 alone writes the session (``sgdwalk.tui.commands.headless``).

Augmentation draws from the run's generator, so every rank draws the whole global batch (and
keeps its part): the generators stay in step and the next epoch's order is the same everywhere.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from sgdwalk.batches import pieces
from sgdwalk.shard import Peers

GD_CHUNK = 1000  # examples per backward pass when accumulating a full-batch gradient


class Ranks:
    """The trainer's place among its ranks: the peers (None: one process) and the DDP wrapper."""

    def __init__(self, peers: Peers | None = None, ddp: nn.Module | None = None) -> None:
        self.peers, self.ddp = peers, ddp

    @classmethod
    def of(cls, model: nn.Module, device: torch.device) -> Ranks:
        """The ranks of a run: several when torchrun started this process, else one."""
        peers = Peers.find(device)
        if peers is None:
            return cls()
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        return cls(peers, ddp)

    def release(self) -> None:
        """Let go of the DDP wrapper and sgdwalk's own group (the run is over)."""
        self.ddp = None
        if self.peers is not None:
            self.peers.close()

    @property
    def world(self) -> int:
        return 1 if self.peers is None else self.peers.world

    @property
    def rank(self) -> int:
        return 0 if self.peers is None else self.peers.rank

    def train_step(self, run: Any, idx: torch.Tensor) -> torch.Tensor:
        """Forward/backward on this rank's part of the global batch ``idx``; the global loss."""
        assert self.ddp is not None
        n = len(idx)
        x = torch.cat([run.data.train_batch(part, run.gen) for part in torch.split(idx, GD_CHUNK)])
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        if hi == lo:  # no rows here (a last batch smaller than the ranks): a zero-weight pass,
            lo, hi, n_weight = 0, min(n, 2), 0.0  # so DDP's gradient all_reduce still happens
        else:
            n_weight = 1.0
        xs, ys = pieces(x[lo:hi], GD_CHUNK), pieces(run.data.y_train[idx[lo:hi]], GD_CHUNK)
        total = torch.zeros((), device=x.device)
        for i, (xc, yc) in enumerate(zip(xs, ys, strict=True)):
            last = i == len(xs) - 1
            sync = contextlib.nullcontext() if last else self.ddp.no_sync()  # type: ignore[operator]
            with sync:
                part = nn.functional.cross_entropy(self.ddp(xc), yc, reduction="sum") * n_weight
                (part * (self.world / n)).backward()  # DDP's mean over ranks: Σ sums / n
            total += part.detach()
        import torch.distributed as dist

        assert self.peers is not None
        dist.all_reduce(total, group=self.peers.group)  # the global batch's loss sum
        return total / n

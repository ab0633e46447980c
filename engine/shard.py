"""The probe split across the ranks of a ``torch.distributed`` group.

Why by index range and sums: the slice and the Hessian are means over the probe set. Each rank
evaluates its own contiguous rows (rank r of W takes rows [n·r/W, n·(r+1)/W); no padding, unlike
``DistributedSampler``, so nothing is counted twice) and contributes its *sum*; one ``all_reduce``
of the sums, divided by the total count, is the single-process mean exactly (up to the order of
float additions). A rank with no rows contributes zeros and still makes every collective call, so
no rank waits for one that skipped a call.

The collectives run on a group of the Walker's own with a bounded timeout, so a rank that died
ends the others' measurement with an error within that time instead of a hang.
"""

from __future__ import annotations

import datetime
from typing import Any

import torch

DEFAULT_TIMEOUT = 600.0  # seconds a collective of the Walker's may wait for the other ranks


class Shard:
    """This rank's rows of a probe of ``total`` examples, and the sums across ranks."""

    def __init__(self, total: int, rank: int, world: int, group: Any = None) -> None:
        self.total, self.rank, self.world, self.group = total, rank, world, group
        self.start = total * rank // world
        self.stop = total * (rank + 1) // world

    @property
    def local(self) -> int:
        return self.stop - self.start

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes the session."""
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks of ``t`` (a new tensor; every rank gets the same values)."""
        out = t.clone()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def mean_of(self, local_means: torch.Tensor) -> torch.Tensor:
        """The probe mean from each rank's mean over its rows (a rank with none gives zeros)."""
        weighted = local_means * self.local if self.local else torch.zeros_like(local_means)
        return self.sum(weighted) / self.total

    def same_everywhere(self, value: float) -> bool:
        """Whether ``value`` is equal on every rank (a cheap check that the probes agree)."""
        t = torch.tensor([value, -value], dtype=torch.float64, device=_device(self.group))
        spread = self._max(t)
        return bool(spread[0] == -spread[1])

    def agree(self, n: int) -> int:
        """The largest of the ranks' ``n`` (a decision every rank must take alike)."""
        t = torch.tensor([float(n)], dtype=torch.float64, device=_device(self.group))
        return int(self._max(t).item())

    def _max(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t


def _device(group: Any) -> torch.device:
    import torch.distributed as dist

    backend = dist.get_backend(group) if dist.is_initialized() else "gloo"
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_for(total: int, device: torch.device, timeout: float = DEFAULT_TIMEOUT) -> Shard | None:
    """The shard of this process when a default process group is initialised, else None.

    Called on every rank at the same point (it creates the Walker's group collectively).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    if world == 1:
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    group = dist.new_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    return Shard(total, dist.get_rank(), world, group)

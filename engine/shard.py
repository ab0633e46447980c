"""The probe split across the ranks of a ``torch.distributed`` group.

Why by index range and sums: the slice and the Hessian are means over the probe set. Each rank
evaluates its own contiguous rows (rank r of W takes rows [n·r/W, n·(r+1)/W); no padding, unlike
``DistributedSampler``, so nothing is counted twice) and contributes its *sum*; one ``all_reduce``
of the sums, divided by the total count, is the single-process mean exactly (up to the order of
float additions). A rank with no rows contributes zeros and still makes every collective call, so
no rank waits for one that skipped a call.

The collectives run on a group of the Walker's own with a bounded timeout, so a rank that died
(or was stopped: SIGSTOP, a hung node) ends the others' measurement with an error within that
time instead of a hang. The bound is ``collective_timeout()``: 600 s (NCCL's own default), or
``$SGDWALK_RANK_TIMEOUT`` seconds; the built-in trainer's process group uses it too.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

import torch

from sgdwalk.values import env_seconds

DEFAULT_TIMEOUT = 600.0  # seconds a collective of the Walker's may wait for the other ranks
TIMEOUT_ENV = "SGDWALK_RANK_TIMEOUT"


def collective_timeout() -> float:
    """Seconds a collective may wait for the other ranks (``$SGDWALK_RANK_TIMEOUT``, else 600)."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)


class Peers:
    """The ranks measuring together: this process's rank, their number, and the group of all of
    them that sgdwalk's collectives run on (its own, with a bounded timeout)."""

    def __init__(self, rank: int, world: int, group: Any = None) -> None:
        self.rank, self.world, self.group = rank, world, group

    @classmethod
    def find(cls, device: torch.device) -> Peers | None:
        """The peers when a default process group of several ranks is initialised, else None.
        Called on every rank at the same point (it creates a group collectively)."""
        import torch.distributed as dist

        if not distributed():
            return None
        return cls(dist.get_rank(), dist.get_world_size(), own_group(device))

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes the session."""
        return self.rank == 0

    def shard(self, total: int, unit: int = 1) -> Shard:
        """This rank's rows of ``total`` probe rows, handed out in whole chunks of ``unit``."""
        return Shard(total, self.rank, self.world, self.group, unit)

    def same_everywhere(self, value: float) -> bool:
        """Whether ``value`` is equal on every rank (a cheap check that the probes agree)."""
        t = torch.tensor([value, -value], dtype=torch.float64, device=_device(self.group))
        spread = self._max(t)
        return bool(spread[0] == -spread[1])

    def agree(self, n: int) -> int:
        """The largest of the ranks' ``n`` (a decision every rank must take alike)."""
        t = torch.tensor([float(n)], dtype=torch.float64, device=_device(self.group))
        return int(self._max(t).item())

    def agree_max(self, value: float) -> float:
        """The largest of the ranks' ``value``."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=_device(self.group))
        return float(self._max(t).item())

    def _max(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def close(self) -> None:
        """Shut the group's backend down now, not at interpreter exit (where gloo's threads,
        torn down in no particular order, can abort the process)."""
        import torch.distributed as dist

        if self.group is not None and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group(self.group)
        self.group = None


class Shard:
    """This rank's rows of a probe of ``total`` examples, and the sums across ranks."""

    def __init__(self, total: int, rank: int, world: int, group: Any = None, unit: int = 1) -> None:
        """``unit``: rows are handed out in whole chunks of this many (a BatchNorm probe chunk
        never spans two ranks, so its statistics are those of one process); a last chunk of one
        row goes with the chunk before it, to one rank (BatchNorm cannot normalise one)."""
        self.total, self.rank, self.world, self.group = total, rank, world, group
        units = -(-total // unit)
        if unit > 1 and total > unit and total % unit == 1:
            units -= 1

        def bound(k: int) -> int:  # where the k-th chunk starts
            return total if k >= units else min(total, k * unit)

        self.start, self.stop = bound(units * rank // world), bound(units * (rank + 1) // world)

    @property
    def local(self) -> int:
        return self.stop - self.start

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

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


def _device(group: Any) -> torch.device:
    import torch.distributed as dist

    backend = dist.get_backend(group) if dist.is_initialized() else "gloo"
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def distributed() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def own_group(device: torch.device, timeout: float | None = None) -> Any:
    """A group of all ranks for sgdwalk's collectives, with a bounded timeout (collective: every
    rank calls it at the same point)."""
    import torch.distributed as dist

    timeout = collective_timeout() if timeout is None else timeout
    backend = "nccl" if device.type == "cuda" else "gloo"
    return dist.new_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))

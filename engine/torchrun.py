"""Several processes under torchrun: launching them, and what each of them does as a rank.

Why one module: ``sgdwalk run --nproc N`` (and ``--nnodes``/``--rdzv-endpoint`` for several
machines) starts ``torch.distributed.run`` with N copies of the headless trainer; each copy joins
the process group, trains its part of every batch under DDP (``sgdwalk.ranks``) and evaluates its
shard of the probe (``sgdwalk.shard``); rank 0 alone writes the session and prints. Every piece of
that which knows about torchrun (its command line, its environment variables, joining and leaving
the group) is here.

Importing this module does not load torch (the CLI builds the command line before torch loads).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from sgdwalk.config import RunConfig


def is_rank() -> bool:
    """Whether torchrun started this process (it sets ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ


def follower() -> bool:
    """A rank other than 0: it trains in step with the others and writes and prints nothing."""
    return is_rank() and os.environ.get("RANK", "0") != "0"


def launches(cfg: RunConfig) -> bool:
    """Whether ``cfg`` asks this process to start several (rather than being one of them)."""
    return (cfg.nproc > 1 or cfg.nnodes is not None) and not is_rank()


def distributed_run(cfg: RunConfig) -> bool:
    """Whether this process is one of several ranks of ``cfg`` (torchrun started it)."""
    return (cfg.nproc > 1 or cfg.nnodes is not None) and is_rank()


def rank_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """In a rank a user's own ``torchrun ... sgdwalk run`` started: the process counts from
    torchrun's environment, so the config says how many ranks there are."""
    if not is_rank() or "LOCAL_WORLD_SIZE" not in os.environ:
        return flags
    out = dict(flags, nproc=int(os.environ["LOCAL_WORLD_SIZE"]))
    nodes = int(os.environ.get("WORLD_SIZE", "1")) // out["nproc"]
    if nodes > 1:
        out["nnodes"] = str(nodes)
        out["rdzv_endpoint"] = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    return out


def argv(cfg: RunConfig, module_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run [options] -m MODULE ARGS``: one machine
    (``--standalone``), or several meeting at the rendezvous endpoint."""
    opts = [f"--nproc-per-node={cfg.nproc}"]
    if cfg.nnodes is not None:
        opts += [f"--nnodes={cfg.nnodes}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={cfg.rdzv_endpoint}"]  # fmt: skip
    else:
        opts.append("--standalone")
    return [sys.executable, "-m", "torch.distributed.run", *opts, "-m", *module_args]


def join(device: torch.device) -> torch.device:
    """In a rank: join torchrun's process group (gloo on CPU, nccl on CUDA) and return this rank's
    device (``cuda:LOCAL_RANK`` on CUDA)."""
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave() -> None:
    """The end of a rank: shut every group down now, not at interpreter exit (where gloo's
    threads, torn down in no particular order, can abort the process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

"""Several processes under torchrun: launching them, and what each of them does as a rank.

Why one module: ``sgdwalk run --nproc N`` (and ``--nnodes``/``--rdzv-endpoint`` for several
machines) starts ``torch.distributed.run`` with N copies of the headless trainer; each copy joins
the process group, trains its part of every batch under DDP (``sgdwalk.ranks``) and evaluates its
shard of the probe (``sgdwalk.shard``); rank 0 alone writes the session and prints. Every piece of
that which knows about torchrun (its command line, its environment variables, joining and leaving
the group, the checks of its flags, the errors of a lost peer) is here.

Bounds, so that nothing waits forever: machines meet within ``rendezvous_timeout()`` seconds
(torchrun's ``join_timeout``; ``$SGDWALK_RDZV_TIMEOUT``, 300 by default), and every collective of
the trainer's process group waits at most ``shard.collective_timeout()`` seconds for the other
ranks, after which the run ends interrupted, saying a rank stopped answering (``lost_peer``).

Importing this module does not load torch (the CLI builds the command line before torch loads).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import sys
from typing import TYPE_CHECKING, Any

from sgdwalk.errors import ConfigError
from sgdwalk.values import env_seconds

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


def world_size(cfg: RunConfig) -> int:
    """How many processes train ``cfg`` together, as seen from one of them."""
    return int(os.environ.get("WORLD_SIZE", "1")) if distributed_run(cfg) else 1


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


RDZV_TIMEOUT_ENV = "SGDWALK_RDZV_TIMEOUT"
DEFAULT_RDZV_TIMEOUT = 300.0


def rendezvous_timeout() -> float:
    """Seconds the machines of ``--nnodes`` have to meet (``$SGDWALK_RDZV_TIMEOUT``, else 300)."""
    return env_seconds(RDZV_TIMEOUT_ENV, DEFAULT_RDZV_TIMEOUT, low=0.999)


def argv(cfg: RunConfig, module_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run [options] -m MODULE ARGS``: one machine
    (``--standalone``), or several meeting at the rendezvous endpoint within the timeout."""
    opts = [f"--nproc-per-node={cfg.nproc}"]
    if cfg.nnodes is not None:
        opts += [f"--nnodes={cfg.nnodes}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={cfg.rdzv_endpoint}",
                 f"--rdzv-conf=join_timeout={rendezvous_timeout():.0f}"]  # fmt: skip
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
        from sgdwalk.shard import collective_timeout

        timeout = datetime.timedelta(seconds=collective_timeout())
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


_LOST = re.compile(
    r"closed by peer|reset by peer|timed out|timeout|broken pipe|connection refused|"
    r"no route to host|DistBackendError|NCCL communicator",
    re.I,
)


def lost_peer(e: BaseException, world: int) -> str | None:
    """When ``e`` says another of ``world`` ranks is gone or stopped answering (a collective
    failed or timed out), the ending's message; else None."""
    import torch.distributed as dist

    if world < 2:
        return None
    from sgdwalk.shard import collective_timeout

    kinds = tuple(k for k in (getattr(dist, "DistError", None),) if isinstance(k, type))
    if not (isinstance(e, kinds) or (isinstance(e, RuntimeError) and _LOST.search(str(e)))):
        return None
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (f"another rank stopped answering (a collective waits at most "
            f"{collective_timeout():.0f} s): {first}")  # fmt: skip


# ---------------------------------------------------------------- checking torchrun's flags


def check_launch(cfg: RunConfig) -> None:
    """The flags of a run that starts several processes, before anything starts: ``--nproc``
    within what this machine can run, ``--nnodes`` N or MIN:MAX, ``--rdzv-endpoint`` host:port
    naming a host that resolves. Raises ``ConfigError``."""
    _check_nproc(cfg)
    if cfg.nnodes is not None:
        _check_nnodes(cfg.nnodes)
    if cfg.rdzv_endpoint is not None:
        _check_endpoint(cfg.rdzv_endpoint)


def _check_nproc(cfg: RunConfig) -> None:
    from sgdwalk.config import THREADS_PER_CORE  # as for --threads: more only thrash

    n = cfg.nproc
    if cfg.device != "cpu":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and n > gpus:
            raise ConfigError(f"--nproc: {n} processes, but this machine has {gpus} GPU(s) and "
                              "nccl needs one per process (--device cpu trains on the CPU "
                              "with gloo)")  # fmt: skip
        if gpus or cfg.device == "cuda":
            return
    cores = os.cpu_count() or 1
    if n > THREADS_PER_CORE * cores:
        raise ConfigError(f"--nproc: {n} processes on this machine's {cores} cores would only "
                          f"thrash (each trains with at least one thread); at most "
                          f"{THREADS_PER_CORE * cores}")  # fmt: skip


def _check_nnodes(text: str) -> None:
    m = re.fullmatch(r"(\d{1,6})(?::(\d{1,6}))?", text)
    low, high = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if not m or low < 1 or high < low:
        raise ConfigError(f"--nnodes: {text!r} is not a number of machines: give N, or MIN:MAX "
                          "with 1 <= MIN <= MAX")  # fmt: skip


def _check_endpoint(text: str) -> None:
    m = re.fullmatch(r"\[([^\]]+)\]:(\w+)|([^:\s\[\]]+):(\w+)", text.strip())
    if not m:
        raise ConfigError(f"--rdzv-endpoint: {text!r} is not host:port (e.g. host0:29400)")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--rdzv-endpoint: {port!r} in {text!r} is not a port (1..65535)")
    try:
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"--rdzv-endpoint: cannot resolve host {host!r} ({why})") from None


def leave(ranks: Any = None) -> None:
    """The end of a rank: let go of ``ranks``' DDP wrapper, then shut every group down now, not
    at interpreter exit. Why: a DDP module still alive when the interpreter is torn down keeps
    its gloo group's threads running into it, and torch then aborts the process ("terminate
    called without an active exception") about one exit in four on a busy machine."""
    import gc

    import torch.distributed as dist

    if ranks is not None:
        ranks.release()
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

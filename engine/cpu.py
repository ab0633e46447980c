"""How many CPU threads torch gets: as many as there are free cores, measured at the start.

Why: torch's default is one thread per core, and its OpenMP threads spin while they wait for each
other. On a shared machine with another job running, one of them is descheduled and the others
spin for it: measured on 2 cores with one other busy process (tests/bench/bench_threads.py), the
digits default (3 epochs, curvature on) took 35.3 s with 2 threads against 13.4 s with 1 (idle:
11.9 s and 12.6 s), and the CNN on CIFAR-shaped data 253 s against 229 s (idle: 122 s and 223 s).
OpenMP's passive wait policy helps when busy but costs 2.5x on the idle MLP, so the lever is the
thread count: one per free core, at least one. "Free" is the cores this process may run on less
the other runnable threads (``/proc/loadavg``'s running count, sampled a few times; the load
average elsewhere). ``--threads N`` overrides it.
"""

from __future__ import annotations

import os
import statistics
import time

SAMPLES = 5
SAMPLE_GAP = 0.02  # seconds between samples of the running count


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def others_running() -> int:
    """Threads of other processes that want a core now (a median of a few samples)."""
    counts = []
    for i in range(SAMPLES):
        try:
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
            counts.append(max(0, running - 1))  # this process, reading
        except (OSError, ValueError, IndexError):
            return round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
        if i < SAMPLES - 1:
            time.sleep(SAMPLE_GAP)
    return int(statistics.median(counts))


def choose_threads(requested: int | None) -> tuple[int, str]:
    """(threads, why): ``requested`` if given, else one per free core."""
    if requested is not None:
        return requested, "--threads"
    cores = usable_cores()
    busy = min(others_running(), cores - 1)
    return cores - busy, f"{cores - busy} of {cores} cores free"


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def adopt_threads() -> str | None:
    """For a script's Walker, the choice ``run`` makes: one torch thread per free core, unless
    the script chose (a thread variable set, or a count other than torch's default of one per
    core). The note saying what was chosen (None: nothing changed)."""
    import torch

    at_start = torch.get_num_threads()
    if any(os.environ.get(name) for name in THREAD_ENV) or at_start != usable_cores():
        return None
    threads, why = choose_threads(None)
    if threads == at_start:
        return None
    torch.set_num_threads(threads)
    return (
        f"torch threads {at_start} -> {threads} ({why}: on a busy machine spare threads "
        "spin and slow training); torch.set_num_threads(n) before the Walker keeps yours"
    )

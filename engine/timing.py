"""Timing for ``sgdwalk bench``: the median of repeated calls, with the device synced around each.

Medians, because a shared machine's noise comes in bursts; one function, so every figure of the
bench is timed the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # sync point: the edges of a timed call


def median_time(
    fn: Callable[[], object], repeats: int, device: torch.device, warm_up: bool = False
) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (after one untimed call with ``warm_up``)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)

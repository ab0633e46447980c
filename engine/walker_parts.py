"""The Walker's smaller parts: its signals, its time budget, its session description and its
curvature meter. Kept apart so ``sgdwalk.walker`` reads as the two moments of an update."""

from __future__ import annotations

import atexit
import contextlib
import math
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from sgdwalk.config import clip_align_batch_sizes, parse_align_batch_sizes, parse_hessian_every
from sgdwalk.errors import ConfigError
from sgdwalk.models import count_params
from sgdwalk.records import FAILED, FINISHED, INTERRUPTED
from sgdwalk.runner import PAUSE_SIGNAL, RESUME_SIGNAL

if TYPE_CHECKING:
    from sgdwalk.curvature import CurvatureMeter


ALIGN_BATCH_SIZES = "10,100,1000,full"  # "full": the whole probe set
ALIGN_SAMPLES = 10
STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class WalkerSignals:
    """Pause/resume on SIGUSR1/SIGUSR2, and SIGTERM/SIGHUP as Ctrl+C, in a user's script.

    Installed only in the main thread, and only over default handlers: a handler the user set is
    the user's. A stop that arrives while the Walker is working (``busy``) is held until that
    work is done, so a session is never left half-written by it.
    """

    def __init__(self) -> None:
        self.paused = False
        self.busy = False
        self.stop_pending = False
        self.stopped_by = ""  # the signal that stopped the script, if one did
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        wanted: dict[int, Callable[[int, Any], None]] = {sig: self._stop for sig in STOP_SIGNALS}
        if PAUSE_SIGNAL is not None and RESUME_SIGNAL is not None:
            wanted[PAUSE_SIGNAL] = self._pause
            wanted[RESUME_SIGNAL] = self._resume
        for sig, handler in wanted.items():
            if signal.getsignal(sig) == signal.SIG_DFL:
                self._previous[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()

    def _pause(self, _sig: int, _frame: object) -> None:
        self.paused = True

    def _resume(self, _sig: int, _frame: object) -> None:
        self.paused = False

    def _stop(self, sig: int, _frame: object) -> None:
        self.stopped_by = signal.Signals(sig).name
        if self.busy:
            self.stop_pending = True
        else:
            raise KeyboardInterrupt

    def raise_pending_stop(self) -> None:
        if self.stop_pending:
            self.stop_pending = False
            raise KeyboardInterrupt


class ScriptGuard:
    """How a user's script ends, as its Walker sees it: a stop signal, an uncaught exception, or
    the interpreter's exit; each calls ``on_end(status, message)`` once."""

    def __init__(self, on_end: Callable[[str, str], None]) -> None:
        self.signals = WalkerSignals()
        self._on_end = on_end
        self._previous_hook: Any = None

    def install(self) -> None:
        self.signals.install()
        atexit.register(self._at_exit)
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook

    def remove(self) -> None:
        self.signals.restore()
        atexit.unregister(self._at_exit)
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook

    def ending(self, kind: type[BaseException], e: BaseException | None) -> tuple[str, str]:
        """The status and message of a session an exception ended."""
        if issubclass(kind, KeyboardInterrupt):
            by = self.signals.stopped_by
            return INTERRUPTED, f"stopped by {by}" if by else "interrupted (Ctrl+C)"
        return FAILED, f"{kind.__name__}: {e}" if str(e) else kind.__name__

    def _excepthook(self, kind: type[BaseException], e: BaseException, tb: Any) -> None:
        previous = self._previous_hook
        self._on_end(*self.ending(kind, e))
        previous(kind, e, tb)

    def _at_exit(self) -> None:
        self._on_end(FINISHED, "the script ended")


class LoopTap:
    """What the loop shows of a step besides its update: the batch loss (reported, or returned by
    the model) and the examples the model saw in training mode. Losses stay on their device until
    the step ends: one sync a step, not one per micro-batch."""

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._reported = 0  # batch sizes reported since the last step
        self._seen = 0  # examples the model saw in training mode since the last step

    def report(self, loss: torch.Tensor | float, batch_size: int | None = None) -> None:
        value = loss.detach().float().mean() if isinstance(loss, torch.Tensor) else loss
        self._losses.append(torch.as_tensor(value, dtype=torch.float32))
        self._reported += batch_size or 0

    def capture(self, args: Any, output: Any) -> None:
        from sgdwalk.batches import batch_size_of

        with contextlib.suppress(TypeError):
            self._seen += batch_size_of(args)
        loss = getattr(output, "loss", None)
        if loss is None and isinstance(output, dict):
            loss = output.get("loss")
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append(loss.detach().float().reshape(()))

    def take(self) -> tuple[float, int]:
        """The step's mean batch loss (NaN: none) and batch size (0: unknown); then forget."""
        losses = [t.to(self._losses[0].device) for t in self._losses]
        loss = torch.stack(losses).mean().item() if losses else math.nan  # the one sync
        size = self._reported or self._seen
        self._losses.clear()
        self._reported = self._seen = 0
        return loss, size


class Budget:
    """Measure every N-th step so that measuring costs at most ``fraction`` of training time.

    Between two step starts, the wall time splits into the Walker's own seconds (``spent``) and
    the loop's (training). The Walker's seconds on a measured step are its cost; N is set from
    cost / training after every measured step, so it follows a loop that speeds up or slows down.
    """

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self._inside = 0.0  # the Walker's seconds, in all
        self._mark: tuple[float, float] | None = None  # (wall clock, _inside) at the last step
        self._was_measured = False
        self._train = math.nan  # smoothed training seconds per step
        self._cost = math.nan  # smoothed Walker seconds per measured step

    def spent(self, seconds: float) -> None:
        self._inside += seconds

    def left_out(self, seconds: float) -> None:
        """Seconds (a curvature pass) that count neither as measuring nor as training."""
        self._inside -= seconds
        if self._mark is not None:
            self._mark = (self._mark[0] + seconds, self._mark[1])

    def measured(self, was_measured: bool) -> None:
        self._was_measured = was_measured

    @property
    def decides(self) -> bool:
        """Whether the coming ``every`` call may change N (it follows a measured step)."""
        return self._was_measured

    def every(self, current: int) -> int:
        """The measuring interval from this step on (called as a step begins)."""
        now = time.perf_counter()
        if self._mark is not None:
            inside = self._inside - self._mark[1]
            self._train = _smooth(self._train, max(now - self._mark[0] - inside, 1e-9))
            if self._was_measured:
                self._cost = _smooth(self._cost, inside)
        self._mark = (now, self._inside)
        if not self._was_measured or math.isnan(self._train) or math.isnan(self._cost):
            return current  # decided after measured steps only (all ranks measure alike)
        return max(1, math.ceil(self._cost / (self.fraction * self._train)))


def _smooth(old: float, new: float, weight: float = 0.3) -> float:
    return new if math.isnan(old) else (1 - weight) * old + weight * new


def parse_curvature_every(value: int | str | None) -> int | None:
    """Steps between curvature passes: an int, 'Ns' (the CLI's step form), or None / 'off'."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError("Walker: hessian_every must be at least 1 step")
        return value
    parsed = parse_hessian_every(str(value))
    if parsed is None:
        return None
    unit, n = parsed
    if unit != "steps":
        raise ConfigError(f"Walker: hessian_every counts steps ({n} or '{n}s'), got {value!r}")
    return n


def curvature_meter(w: Any) -> CurvatureMeter:
    from sgdwalk.curvature import CurvatureMeter

    sizes = clip_align_batch_sizes(parse_align_batch_sizes(ALIGN_BATCH_SIZES), w.probe_n)
    meter = CurvatureMeter(w.evaluator, w.chunks, w.examples, w.probe_n, w.top_k, sizes,
                           ALIGN_SAMPLES, w.seed, shard=w.shard)  # fmt: skip
    meter.clock = w.meter.elapsed
    return meter


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _jsonable(value.item())
    return repr(value)


def optimizer_params(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The first parameter group's hyper-parameters (lr, momentum, ...), JSON-safe."""
    group = optimizer.param_groups[0]
    return {k: _jsonable(v) for k, v in group.items() if k != "params"}


def describe(w: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Walker session's config (what the science depends on) and info (sizes, device)."""
    opt = w.optimizer
    hyper = optimizer_params(opt) if opt is not None else {}
    config = {
        "source": "walker",
        "model": type(w.module).__name__,
        "dataset": str(w.meta.get("dataset", "custom")),
        "optimizer": type(opt).__name__ if opt is not None else None,
        "optimizer_params": hyper,
        "lr": hyper.get("lr"),
        "momentum": hyper.get("momentum"),
        "weight_decay": hyper.get("weight_decay"),
        "batch_size": w.batch_size,
        "loss": "cross-entropy" if w.loss_fn is None else getattr(w.loss_fn, "__name__", "custom"),
        "meta": w.meta,
        **w.settings,
    }
    info = {
        "device": str(w.device),
        "device_name": torch.cuda.get_device_name(w.device) if w.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "params": count_params(w.module),
        "probe_size": w.probe_n,
        "probe_chunk": w.chunk,
        "batch_size": w.batch_size,
        "total_steps": w.total_steps,
        "points": w.settings["points"],
        "slice_mode": w.evaluator.slice_mode,
        "threads": torch.get_num_threads(),
        "world_size": w.shard.world if w.shard is not None else 1,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }  # fmt: skip
    return config, info

"""The Walker's smaller parts: its hooks into the user's objects, what the loop shows of a step,
its time budget, how a script's end reaches it, and its session's description. Kept apart so
``sgdwalk.walker`` reads as the two moments of an update."""

from __future__ import annotations

import atexit
import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from sgdwalk.control import Controls, SignalHandlers, ending
from sgdwalk.errors import ConfigError
from sgdwalk.records import FINISHED
from sgdwalk.values import Schedule


class Hooks:
    """The Walker's hooks on the user's optimiser (step pre/post hooks), model (a forward hook
    for the batch loss) and GradScaler (its ``step``, to see skipped steps); ``remove`` takes
    every one of them off again."""

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._scaler: tuple[Any, Any] | None = None

    def optimizer(self, optimizer: torch.optim.Optimizer, before: Callable[[], None] | None,
                  after: Callable[[], None] | None) -> None:  # fmt: skip
        if before is not None:
            self._handles.append(optimizer.register_step_pre_hook(lambda *_: before()))
        if after is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda *_: after()))

    def model(self, model: nn.Module, tap: LoopTap) -> None:
        """Take the batch loss from the model's output when it carries one."""

        def capture(module: nn.Module, args: Any, output: Any) -> None:
            # the Walker's private copy carries this hook too, hence the check
            if module is model and module.training:
                tap.capture(args, output)

        self._handles.append(model.register_forward_hook(capture))

    def scaler(self, scaler: Any, steps: Callable[[], int], skipped: Callable[[str], None]) -> None:
        """Call ``skipped(why)`` when ``scaler.step`` returns without a step taken (``steps`` the
        same before and after)."""
        original = scaler.step

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            taken = steps()
            out = original(optimizer, *args, **kwargs)
            if steps() == taken:
                scale = scaler.get_scale() if hasattr(scaler, "get_scale") else math.nan
                skipped(f"the GradScaler skipped the update after step {taken} (inf/NaN "
                        f"gradients; scale now {scale:g}): not measured")  # fmt: skip
            return out

        scaler.step = step
        self._scaler = (scaler, original)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._scaler is not None:
            scaler, original = self._scaler
            scaler.step = original
            self._scaler = None


class ScriptGuard:
    """How a user's script ends, as its Walker sees it: a stop signal (SIGTERM/SIGHUP, raised as
    ``KeyboardInterrupt`` outside the Walker's own work; ``sgdwalk.control``), an uncaught
    exception, or the interpreter's exit; each calls ``on_end(status, message)`` once."""

    def __init__(self, controls: Controls, on_end: Callable[[str, str], None]) -> None:
        self.controls = controls
        self._signals = SignalHandlers(controls, interrupt=True, only_defaults=True)
        self._on_end = on_end
        self._previous_hook: Any = None

    def install(self) -> None:
        self._signals.install()
        atexit.register(self._at_exit)
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook

    def remove(self) -> None:
        self._signals.uninstall()
        atexit.unregister(self._at_exit)
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook

    def ending(self, e: BaseException) -> tuple[str, str]:
        """The status and message of a session an exception ended."""
        return ending(e, self.controls.stopped_by)

    def _excepthook(self, kind: type[BaseException], e: BaseException, tb: Any) -> None:
        previous = self._previous_hook
        self._on_end(*self.ending(e))
        previous(kind, e, tb)

    def _at_exit(self) -> None:
        self._on_end(FINISHED, "the script ended")


class Shield:
    """``with shield:`` around the Walker's own work: a stop signal waits for its end (then
    raises as Ctrl+C), the RNG states it finds are restored, no gradients are recorded, its
    seconds are counted against the budget, and an exception in it goes to ``on_failure`` (the
    user's training must survive its instrument)."""

    def __init__(self, controls: Controls, budget: Budget | None, device: torch.device,
                 on_failure: Callable[[Exception], None]) -> None:  # fmt: skip
        self.controls, self.budget, self.on_failure = controls, budget, on_failure
        self.devices = [device.index or 0] if device.type == "cuda" else []
        self._stack: contextlib.ExitStack | None = None
        self._started = 0.0

    def __enter__(self) -> None:
        self.controls.busy = True
        self._started = time.perf_counter()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(torch.random.fork_rng(devices=self.devices))
        self._stack.enter_context(torch.no_grad())

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None,
                 tb: Any) -> bool:  # fmt: skip
        assert self._stack is not None
        self._stack.close()
        self.controls.busy = False
        if self.budget is not None:
            self.budget.spent(time.perf_counter() - self._started)
        if isinstance(e, Exception):
            self.on_failure(e)
        elif e is not None:
            return False  # Ctrl+C, SystemExit: the script's own ending
        self.controls.raise_pending_stop()
        return True


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

    def follow(self, instrument: Any, peers: Any) -> None:
        """As a step begins: measure every N-th step from now on, N from this budget (agreed by
        every rank, so all measure the same steps)."""
        every = self.every(instrument.meter.every)
        if peers is not None and self.decides:
            every = peers.agree(every)
        instrument.measure_every(every)

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


def steps_schedule(value: int | str | None) -> Schedule | None:
    """The Walker's ``hessian_every``: steps between curvature passes, as an int or 'Ns' (the
    command line's step form); None or 'off': no passes."""
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, int) and value < 1:
        raise ConfigError("Walker: hessian_every must be at least 1 step")
    text = f"{value}s" if isinstance(value, int) else str(value)
    schedule = Schedule.parse(text, "Walker: hessian_every")
    if schedule is not None and schedule.unit != "steps":
        n = schedule.every
        raise ConfigError(f"Walker: hessian_every counts steps ({n} or '{n}s'), got {value!r}")
    return schedule


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: numbers, text, lists, dicts; anything else as its repr."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return jsonable(value.item())
    return repr(value)


def optimizer_params(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The first parameter group's hyper-parameters (lr, momentum, ...), JSON-safe."""
    group = optimizer.param_groups[0]
    return {k: jsonable(v) for k, v in group.items() if k != "params"}

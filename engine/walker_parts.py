"""The Walker's smaller parts: its hooks into the user's objects, the shield around its own work,
what the loop shows of a step, and the optimiser's description. Kept apart so
``sgdwalk.walker`` reads as the two moments of an update (how the script's end, its forks and its
threads reach the Walker is ``sgdwalk.walker_guard``)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sgdwalk.batches import batch_size_of
from sgdwalk.control import Controls
from sgdwalk.walker_args import fail, jsonable


class Hooks:
    """The Walker's hooks on the user's optimiser (step pre/post hooks), model (a forward hook
    for the batch loss) and GradScaler (its ``step``, to see skipped steps); ``remove`` takes
    every one of them off again."""

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._stepping: list[Any] = []  # the optimiser's step hooks: one optimiser at a time
        self._scaler: tuple[Any, Any] | None = None
        self._model: nn.Module | None = None

    def optimizer(self, optimizer: torch.optim.Optimizer, before: Callable[[], None] | None,
                  after: Callable[[], None] | None) -> None:  # fmt: skip
        """Hook ``optimizer``'s steps, in place of the step hooks of any optimiser before it."""
        for handle in self._stepping:
            handle.remove()
        self._stepping.clear()
        if before is not None:
            self._stepping.append(optimizer.register_step_pre_hook(lambda *_: before()))
        if after is not None:
            self._stepping.append(optimizer.register_step_post_hook(lambda *_: after()))

    def model(self, model: nn.Module, tap: LoopTap) -> None:
        """Take the batch loss from the model's output when it carries one (hooked once)."""
        if self._model is model:
            return
        self._model = model

        def capture(module: nn.Module, args: Any, output: Any) -> None:
            # the Walker's private copy carries this hook too, hence the check
            if module is model and module.training:
                tap.capture(args, output)

        self._handles.append(model.register_forward_hook(capture))

    def scaler(self, scaler: Any, steps: Callable[[], int], skipped: Callable[[str], None]) -> None:
        """Call ``skipped(why)`` when ``scaler.step`` returns without a step taken (``steps`` the
        same before and after); a scaler already wrapped stays as it is."""
        if self._scaler is not None:
            return
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
        for handle in self._handles + self._stepping:
            handle.remove()
        self._handles.clear()
        self._stepping.clear()
        self._model = None
        if self._scaler is not None:
            scaler, original = self._scaler
            scaler.step = original
            self._scaler = None


class Shield:
    """``with shield:`` around the Walker's own work: a stop signal waits for its end (then
    raises as Ctrl+C), no gradients are recorded, and an exception in it goes to ``on_failure`` (the user's training must survive its
    instrument).

    The global RNG is left alone: the Walker's own draws come from its seeded generators, so
    another thread's stream is never rewound. Only for a model that draws from the global RNG in
    the probe's forward (``keep_rng``, found when the Walker is made) are the RNG states saved
    and restored around the work (``fork_rng``), which keeps this thread's stream as it was."""

    def __init__(self, controls: Controls, device: torch.device,
                 on_failure: Callable[[Exception], None], keep_rng: bool = False) -> None:  # fmt: skip
        self.controls, self.on_failure = controls, on_failure
        self.devices = [device.index or 0] if device.type == "cuda" else []
        self.keep_rng = keep_rng
        self._stack: contextlib.ExitStack | None = None
        self._grad = True

    def __enter__(self) -> None:
        self.controls.busy = True
        if self.keep_rng:
            self._stack = contextlib.ExitStack()
            self._stack.enter_context(torch.random.fork_rng(devices=self.devices))
        self._grad = torch.is_grad_enabled()  # (no ExitStack and no_grad object: every step)
        torch.set_grad_enabled(False)

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None,
                 tb: Any) -> bool:  # fmt: skip
        torch.set_grad_enabled(self._grad)
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        self.controls.busy = False
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
        self.batch: Any = None  # the step's examples, reported for batch sharpness

    def report(self, loss: torch.Tensor | float, batch_size: int | None = None,
               batch: Any = None) -> None:  # fmt: skip
        number = isinstance(loss, int | float) and not isinstance(loss, bool)
        if not (number or isinstance(loss, torch.Tensor)):
            raise fail("report", f"loss must be a tensor or a number, got {loss!r:.60}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 0):
            raise fail("report", f"batch_size must be a whole number, got {batch_size!r:.60}")
        value = loss.detach().float().mean() if isinstance(loss, torch.Tensor) else loss
        self._losses.append(torch.as_tensor(value, dtype=torch.float32))
        self._reported += batch_size or 0
        if batch is not None:
            self.batch = batch

    def capture(self, args: Any, output: Any) -> None:
        # on every forward in training: the common case (a tensor first) without a search
        first = args[0] if isinstance(args, tuple) and args else None
        if isinstance(first, torch.Tensor) and first.dim():
            self._seen += first.shape[0]
        else:
            with contextlib.suppress(TypeError):
                self._seen += batch_size_of(args)
        if isinstance(output, torch.Tensor):
            return  # logits: no loss to take
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
        self.batch = None
        return loss, size


def optimizer_params(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The first parameter group's hyper-parameters (lr, momentum, ...), JSON-safe."""
    group = optimizer.param_groups[0]
    return {k: jsonable(v) for k, v in group.items() if k != "params"}

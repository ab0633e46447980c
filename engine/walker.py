"""Measuring a user's own training loop: ``sgdwalk.Walker``, the second client of the Instrument.

Why optimizer hooks: the one moment every training loop shares, whatever wraps it (plain PyTorch,
gradient accumulation, ``GradScaler``, Lightning, the Hugging Face ``Trainer``), is
``optimizer.step()``. Just before it, the gradient the update uses is in ``.grad`` (accumulated and,
under a ``GradScaler``, already unscaled: ``scaler.step`` unscales before it steps, and does not
step at all when it skips), and just after it the parameters are θ_{t+1}.
``Optimizer.register_step_pre_hook`` / ``register_step_post_hook`` give exactly those two moments,
so ``attach`` needs nothing else from the loop. What is measured at them is the Instrument's
(``sgdwalk.instrument``), the core the built-in trainer drives too; the Walker owns only what a
user's loop needs around it: the hooks, the loop's batch loss, a time budget, the session, and the
script's end.

What the Walker never does is change the user's training, or stop it: it measures on a private
eager copy of the model (a compiled or DDP-wrapped model is unwrapped first, so Hessian-vector
products never go through a compiled graph) and draws from its own seeded generators only. A
misused argument is a ``ConfigError`` when the Walker is made (``sgdwalk.walker_args``, and one
forward of the probe through the private copy, ``sgdwalk.walker_probe``); everything after that
is one line on stderr and training goes on: a session that cannot be made (the Walker then
measures nothing, ``sgdwalk.walker_session``), a failure inside the Walker (a full disk, a bug:
the session ends ``failed``, its traceback in ``error.txt``). Its hooks and handlers act only in
the process that made it and measure one thread's steps (``sgdwalk.walker_guard``).

Signals (``sgdwalk.control``): SIGUSR1/SIGUSR2 pause and resume between steps (a dashboard's
``p``); SIGTERM and SIGHUP, where the script left them at their defaults (which kill with no chance
to record an ending), raise ``KeyboardInterrupt`` as Ctrl+C does, outside the Walker's own work.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import torch
from torch import nn

from sgdwalk.batches import LossFn, unwrap
from sgdwalk.budget import AUTO_FRACTION as DEFAULT_BUDGET
from sgdwalk.control import Controls
from sgdwalk.cpu import adopt_threads
from sgdwalk.instrument import Instrument
from sgdwalk.records import FINISHED, NOTE_EVENT
from sgdwalk.values import DEFAULT_PROBE
from sgdwalk.walker_args import CHECKS, check_arguments, fail, meta_of, settings_of
from sgdwalk.walker_guard import Owner, ScriptGuard
from sgdwalk.walker_parts import Hooks, LoopTap, Shield, optimizer_params
from sgdwalk.walker_probe import walker_probe
from sgdwalk.walker_progress import ProgressLine
from sgdwalk.walker_session import WalkerSession, say
from sgdwalk.walker_steps import Life, Steps

KEEP_RNG_NOTE = ("the model draws random numbers in the probe's forward (dropout off): the "
                 "Walker saves and restores the RNG state around its work")  # fmt: skip


class Walker:
    """Measures every optimiser step of a model into an sgdwalk session (the README lists the
    arguments). ``probe``: the fixed set the slices are measured on (tensors ``(x, y)``, a batch,
    a ``Dataset`` or a ``DataLoader``). ``loss_fn(model, batch)``: a batch's mean loss (default:
    cross-entropy of ``model(x)`` against ``y``). ``session``: the name, claimed at once
    (``$SGDWALK_SESSION`` wins); one that cannot be had is a line on stderr, and the Walker then
    measures nothing. ``budget``: the most of the training time measuring may take (0.5: the
    loop runs at most 1.5x slower; a random share of the steps is measured), None: every step."""

    def __init__(
        self, model: nn.Module, probe: Any, loss_fn: LossFn | None = None, *,
        session: str | None = None, sessions_dir: str | os.PathLike[str] | None = None,
        points: int = 10, measure_every: int = 1, hessian_every: int | str | None = None,
        top_k: int = 10, probe_size: int = DEFAULT_PROBE, chunk: int | None = None,
        budget: float | None = DEFAULT_BUDGET, batch_size: int | None = None,
        total_steps: int | None = None, meta: dict[str, Any] | None = None, seed: int = 0,
        slice_mode: str = "auto", decompose: bool = False, batch_sharpness: bool = False,
        track_sharpness: bool = False, log_to: str | list[str] | None = None,
    ) -> None:  # fmt: skip
        check_arguments(**{k: v for k, v in locals().items() if k in CHECKS})  # the keywords
        self.model, self.module, self.loss_fn = model, _module(model, loss_fn), loss_fn
        self.notes = [n for n in [adopt_threads()] if n]  # threads as `run` chooses (unless set)
        self.settings = settings_of(locals())
        self.evaluator, self.probe, keep_rng = walker_probe(self.module, probe, loss_fn,
                                                            probe_size, chunk, batch_size)  # fmt: skip
        self.instrument = Instrument(self.module, self.evaluator, self.probe, self.settings,
                                     total_steps=total_steps)  # fmt: skip
        self.batch_size, self.total_steps, self.meta = batch_size, total_steps, meta_of(meta)
        self.owner, self.controls = Owner(lambda m: self.life.warn(m)), Controls()
        self.guard = ScriptGuard(self.controls, self.close, self.owner)  # exits, signals, forks
        self.shield = Shield(self.controls, self.evaluator.flat.device,
                             lambda e: self.life.give_up(e), keep_rng)  # fmt: skip
        self.hooks, self.tap = Hooks(), LoopTap()  # the loop's batch losses and sizes
        self.optimizer: torch.optim.Optimizer | None = None
        peers = self.probe.peers
        name = type(self.module).__name__.lower()
        self.record = WalkerSession.claim(
            session, sessions_dir, name, peers is None or peers.leader, self.instrument.elapsed
        )  # last: nothing fails after it (but the trackers, which give the folder back)
        self.record.track(log_to)  # the scalars to TensorBoard, W&B, trackio too
        self.steps = Steps(self.module, self.instrument, self.record, self.controls, self.tap,
                           batch_size, ProgressLine(lambda: self.instrument.pace.budget))  # fmt: skip
        self.life = Life(self.record, self.steps, self.hooks, self.guard, peers)

    @property
    def step(self) -> int:  # updates taken so far
        return self.steps.step

    @property
    def epoch(self) -> int:
        """The loop's epoch (from 1); the loop may set it, and the records carry it."""
        return self.steps.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.steps.epoch = value

    # -- wiring

    def attach(self, optimizer: torch.optim.Optimizer, scaler: Any = None, *,
               before: bool = True, after: bool = True) -> Walker:  # fmt: skip
        """Measure every ``optimizer.step()`` by its hooks (a ``GradScaler``'s skipped steps too),
        with the loss a model returns (``watch_loss``). ``before``/``after=False``: the caller
        calls ``before_step``/``after_step`` (a step whose closure runs backward). Again: one
        hook each, another optimiser in the first's place; after ``close``: said, nothing done."""
        if self.life.inert or not self.owner.here():
            return self
        if self.life.closed:
            say("Walker.attach: this Walker is closed and measures nothing; make a new one")
            return self
        if not hasattr(optimizer, "register_step_pre_hook"):
            raise fail("attach", f"give a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if optimizer is not self.optimizer or (before, after) != self._hooked:
            if self.optimizer is not None and optimizer is not self.optimizer:
                self.steps.event(f"the steps of a new optimiser ({type(optimizer).__name__}) "
                                 f"from step {self.step + 1}", NOTE_EVENT)  # fmt: skip
            self.optimizer, self._hooked = optimizer, (before, after)
            self.instrument.use(optimizer)
            self.hooks.optimizer(optimizer, self.before_step if before else None,
                                 self.after_step if after else None)  # fmt: skip
        if scaler is not None:
            self.hooks.scaler(scaler, lambda: self.step, self.life.scaler_skipped)
        self.watch_loss()
        self._open()
        return self

    _hooked: tuple[bool, bool] | None = None

    def watch_loss(self) -> None:
        """Take the batch loss from the model's output when it carries one (``output.loss`` or
        ``output["loss"]``, as Hugging Face models return in training mode)."""
        self.hooks.model(self.model, self.tap)

    def report(self, loss: torch.Tensor | float, batch_size: int | None = None,
               batch: Any = None) -> None:  # fmt: skip
        """The loop's mini-batch loss (and size; several before one step are averaged), else the
        model's own (``watch_loss``) or NaN; the size, else what the model saw. ``batch``: the
        step's examples for ``batch_sharpness`` (before ``optimizer.step()``). A loss that is no
        tensor or number is a ``ConfigError`` here: the call site's error, not training's."""
        self.tap.report(loss, batch_size, batch)

    # -- the two moments of an update

    def before_step(self) -> None:
        """After backward, before ``optimizer.step()``: θ_t and the gradient it will use.

        A step begun but never ended (its ``after_step`` did not come) was skipped."""
        if not self.life.steps_here():
            return
        self.guard.went_on()
        with self.instrument.pace.own(), self.shield:  # the shield's own cost counts too
            self._open()
            if not self.life.closed:
                self.steps.begin()

    def skipped(self, why: str = "inf/NaN gradients") -> None:
        """The step begun with ``before_step`` was not taken (an AMP scaler skipped it): it is
        recorded as skipped, not measured as a zero move."""
        if self.life.steps_here():
            self.steps.skip(why)

    def after_step(
        self, loss: torch.Tensor | float | None = None, batch_size: int | None = None
    ) -> None:
        """After ``optimizer.step()``: measure the update and store its record."""
        if loss is not None:
            self.report(loss, batch_size)
        if not self.life.steps_here() or not self.steps.open:
            return  # (not open: a step whose start the Walker did not see, attached mid-step)
        with self.instrument.pace.own(), self.shield:  # the shield's own cost counts too
            self.steps.end()

    # -- failures, the session

    def _open(self) -> None:
        self.life.open(lambda: describe(self),
                       self.notes + ([KEEP_RNG_NOTE] if self.shield.keep_rng else []))  # fmt: skip

    def close(self, status: str = FINISHED, message: str = "") -> None:
        """End the session with ``status`` (finished, interrupted, failed); remove every hook and
        handler. Idempotent; also called at exit, so a script that forgets it still ends well."""
        self.life.close(status, message)

    def __enter__(self) -> Walker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(*(self.guard.ending(e) if e is not None else (FINISHED, "")))


def _module(model: Any, loss_fn: Any) -> nn.Module:
    """The eager module under the model's wrappers, with parameters to measure."""
    if not isinstance(model, nn.Module):
        raise fail("model", f"give a torch.nn.Module, got {type(model).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise fail("loss_fn", f"give a function loss_fn(model, batch), got {loss_fn!r:.60}")
    module = unwrap(model)
    if next(module.parameters(), None) is None:
        raise fail("model", "it has no parameters to measure")
    return module


def describe(w: Walker) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Walker session's config (what the science depends on) and info (sizes, device)."""
    opt = w.optimizer
    hyper = optimizer_params(opt) if opt is not None else {}
    loss = "cross-entropy" if w.loss_fn is None else getattr(w.loss_fn, "__name__", "custom")
    config = {
        "source": "walker", "model": type(w.module).__name__,
        "dataset": str(w.meta.get("dataset", "custom")),
        "optimizer": type(opt).__name__ if opt is not None else None, "optimizer_params": hyper,
        "lr": hyper.get("lr"), "momentum": hyper.get("momentum"),
        "weight_decay": hyper.get("weight_decay"), "batch_size": w.batch_size, "loss": loss,
        "meta": w.meta, **w.settings.as_dict(), "probe": w.probe.size,
    }  # fmt: skip
    peers = w.probe.peers
    info = w.instrument.info(w.module, w.evaluator.flat.device, 1 if peers is None else peers.world)
    return config, info | {"batch_size": w.batch_size, "total_steps": w.total_steps}

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

What the Walker never does is change the user's training: it measures on a private eager copy of
the model (a compiled or DDP-wrapped model is unwrapped first, so Hessian-vector products never
go through a compiled graph), and restores the RNG states it finds. A failure inside the Walker
(a full disk, a bug) ends the session ``failed`` with one line on stderr, and training goes on
unmeasured.

Signals (``sgdwalk.control``): SIGUSR1/SIGUSR2 pause and resume between steps (a dashboard's
``p``); SIGTERM and SIGHUP, where the script left them at their defaults (which kill with no chance
to record an ending), raise ``KeyboardInterrupt`` as Ctrl+C does, outside the Walker's own work.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from sgdwalk.batches import LossFn, unwrap
from sgdwalk.control import Controls
from sgdwalk.errors import ConfigError, StorageError
from sgdwalk.instrument import Instrument, Settings
from sgdwalk.records import FAILED, FINISHED, SKIPPED_EVENT
from sgdwalk.session.naming import SESSION_ENV, SESSIONS_ENV, adopt, claim, sessions_folder
from sgdwalk.shard import Peers
from sgdwalk.slicing import SLICE_MODES
from sgdwalk.values import DEFAULT_PROBE
from sgdwalk.walker_parts import (
    Budget,
    Hooks,
    LoopTap,
    ScriptGuard,
    Shield,
    jsonable,
    optimizer_params,
    steps_schedule,
)
from sgdwalk.walker_probe import walker_probe
from sgdwalk.walker_session import WalkerSession
from sgdwalk.walker_steps import Steps


class Walker:
    """Measures every optimiser step of a model into an sgdwalk session (see the README).

    ``probe``: the fixed set the slices are measured on (tensors ``(x, y)``, a batch, a
    ``Dataset`` or a ``DataLoader``: its first ``probe_size`` examples). ``loss_fn(model, batch)``:
    a batch's mean loss (default: cross-entropy of ``model(x)`` against ``y``). ``session``: the
    name, claimed at once (``$SGDWALK_SESSION`` wins: ``sgdwalk exec`` names it). ``budget``: the
    most of the training time measuring may take (every N-th step, N adapted). ``decompose``:
    split each step by the latest top-k eigenvectors (``hessian_every``, in steps). ``chunk``:
    probe examples per pass (with BatchNorm ``batch_size`` or 1,024; without, one for speed).
    """

    def __init__(
        self, model: nn.Module, probe: Any, loss_fn: LossFn | None = None, *,
        session: str | None = None, sessions_dir: str | os.PathLike[str] | None = None,
        points: int = 10, measure_every: int = 1, hessian_every: int | str | None = None,
        top_k: int = 10, probe_size: int = DEFAULT_PROBE, chunk: int | None = None,
        budget: float | None = None, batch_size: int | None = None,
        total_steps: int | None = None, meta: dict[str, Any] | None = None, seed: int = 0,
        slice_mode: str = "auto", decompose: bool = False,
    ) -> None:  # fmt: skip
        _check(budget is None or budget > 0, "budget must be a positive fraction")
        self.model, self.module, self.loss_fn = model, unwrap(model), loss_fn
        _check(next(self.module.parameters(), None) is not None, "the model has no parameters")
        self.settings = _settings(points, measure_every, slice_mode, hessian_every, top_k, seed,
                                  decompose)  # fmt: skip
        self.evaluator, self.probe = walker_probe(self.module, probe, loss_fn, probe_size, chunk,
                                                  batch_size)  # fmt: skip
        self.instrument = Instrument(self.module, self.evaluator, self.probe, self.settings)
        self.budget = Budget(budget) if budget is not None else None
        self.batch_size, self.total_steps = batch_size, total_steps
        self.meta = jsonable(dict(meta or {}))
        folder = _claim(session, sessions_dir, self.module, self.probe.peers)
        self.record = WalkerSession(folder, self.instrument.elapsed)
        self.controls = Controls()
        self.guard = ScriptGuard(self.controls, self.close)  # signals, an uncaught exception, exit
        self.shield = Shield(self.controls, self.budget, self.evaluator.flat.device,
                             lambda e: _give_up(self, e))  # fmt: skip
        self.hooks, self.tap = Hooks(), LoopTap()  # the loop's batch losses and sizes
        self.steps = Steps(self.module, self.instrument, self.record, self.controls, self.tap,
                           self.budget, batch_size)  # fmt: skip
        self.optimizer: torch.optim.Optimizer | None = None
        self._closed = False

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
        """Measure every ``optimizer.step()`` through its step hooks, and take the batch loss a
        model returns itself (``watch_loss``). With a ``GradScaler``, the steps it skips are
        recorded. ``before=False`` / ``after=False``: the caller calls ``before_step`` /
        ``after_step`` itself (a framework whose step runs forward and backward inside
        ``optimizer.step(closure)``, where the pre-hook is too early)."""
        self.optimizer = optimizer
        self.instrument.use(optimizer)
        self.hooks.optimizer(optimizer, self.before_step if before else None,
                             self.after_step if after else None)  # fmt: skip
        if scaler is not None:
            self.hooks.scaler(scaler, lambda: self.step, self._scaler_skipped)
        self.watch_loss()
        self._open()
        return self

    def watch_loss(self) -> None:
        """Take the batch loss from the model's output when it carries one (``output.loss`` or
        ``output["loss"]``, as Hugging Face models return in training mode)."""
        self.hooks.model(self.model, self.tap)

    def report(self, loss: torch.Tensor | float, batch_size: int | None = None) -> None:
        """The loop's mini-batch loss (and size); several before one step are averaged
        (gradient accumulation). Optional: without it the step's batch loss is the one the model
        returned (``watch_loss``), or NaN; the batch size is what the model saw since the last
        step, or the Walker's ``batch_size``."""
        self.tap.report(loss, batch_size)

    # -- the two moments of an update

    def before_step(self) -> None:
        """After backward, before ``optimizer.step()``: θ_t and the gradient it will use.

        A step begun but never ended (its ``after_step`` did not come) was skipped."""
        if self._closed:
            return
        with self.shield:
            self._open()
            self.steps.begin()

    def skipped(self, why: str = "inf/NaN gradients") -> None:
        """The step begun with ``before_step`` was not taken (an AMP scaler skipped it): it is
        recorded as skipped, not measured as a zero move."""
        if not self._closed:
            self.steps.skip(why)

    def after_step(
        self, loss: torch.Tensor | float | None = None, batch_size: int | None = None
    ) -> None:
        """After ``optimizer.step()``: measure the update and store its record."""
        if self._closed:
            return
        if loss is not None:
            self.report(loss, batch_size)
        if not self.steps.open:
            return  # a step whose start the Walker did not see (attached mid-step)
        with self.shield:
            self.steps.end()

    # -- failures, the session

    def _open(self) -> None:
        if not self._closed and self.record.open(*describe(self)):
            self.guard.install()

    def _scaler_skipped(self, message: str) -> None:
        if not self._closed:
            self.steps.event(SKIPPED_EVENT, message)

    def close(self, status: str = FINISHED, message: str = "") -> None:
        """End the session with ``status`` (finished, interrupted, failed); remove every hook and
        handler. Idempotent; also called at exit, so a script that forgets it still ends well."""
        if self._closed:
            return
        self._closed = True
        self.hooks.remove()
        self.guard.remove()
        try:
            self.steps.close(status, message)
        finally:
            if self.probe.peers is not None:
                self.probe.peers.close()

    def __enter__(self) -> Walker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(*(self.guard.ending(e) if e is not None else (FINISHED, "")))


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
        "budget": w.budget.fraction if w.budget is not None else None,
    }  # fmt: skip
    peers = w.probe.peers
    info = w.instrument.info(w.module, w.evaluator.flat.device, 1 if peers is None else peers.world)
    return config, info | {"batch_size": w.batch_size, "total_steps": w.total_steps}


def _give_up(w: Walker, e: Exception) -> None:
    """A failure inside the Walker: one line on stderr, the session ends failed, training goes
    on unmeasured."""
    cause = str(e) if isinstance(e, StorageError) else f"{type(e).__name__}: {e}"
    with contextlib.suppress(OSError):
        print(f"sgdwalk: measuring stopped, training goes on: {cause}", file=sys.stderr)
    with contextlib.suppress(Exception):
        w.close(FAILED, cause)


def _claim(session: str | None, sessions_dir: str | os.PathLike[str] | None,
           model: nn.Module, peers: Peers | None) -> Path | None:  # fmt: skip
    """The session's folder, claimed now (rank 0 alone writes one: None on the others). Under
    ``sgdwalk exec`` (``$SGDWALK_SESSION`` set) the dashboard waits on the name and folder it
    claimed, so they win over the script's arguments; otherwise the ``session`` argument, or
    MODELCLASS-YYYYmmdd-HHMMSS, in ``sessions_dir``, else ``$SGDWALK_SESSIONS``, else
    ``./sessions``."""
    if peers is not None and not peers.leader:
        return None
    exec_name = os.environ.get(SESSION_ENV)
    if exec_name:
        return adopt(sessions_folder(os.environ.get(SESSIONS_ENV) or sessions_dir) / exec_name,
                     "session=")  # fmt: skip
    folder = sessions_folder(sessions_dir)
    return claim(folder, session, type(model).__name__.lower(), "session=")


def _settings(points: int, measure_every: int, slice_mode: str, hessian_every: int | str | None,
              top_k: int, seed: int, decompose: bool) -> Settings:  # fmt: skip
    """The Walker's arguments about what to measure, checked and parsed."""
    _check(points >= 1, "points must be at least 1")
    _check(measure_every >= 0, "measure_every must be 0 (off) or more")
    _check(slice_mode in SLICE_MODES, f"slice_mode must be one of {', '.join(SLICE_MODES)}")
    return Settings(points=points, measure_every=measure_every, slice_mode=slice_mode,
                    hessian_every=steps_schedule(hessian_every), top_k=top_k, seed=seed,
                    decompose=decompose)  # fmt: skip


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"Walker: {message}")

"""Measuring a user's own training loop: ``sgdwalk.Walker``.

Why optimizer hooks: the one moment every training loop shares, whatever wraps it (plain PyTorch,
gradient accumulation, ``GradScaler``, Lightning, the Hugging Face ``Trainer``), is
``optimizer.step()``. Just before it, the gradient the update uses is in ``.grad`` (accumulated and,
under a ``GradScaler``, already unscaled: ``scaler.step`` unscales before it steps, and does not
step at all when it skips), and just after it the parameters are θ_{t+1}.
``Optimizer.register_step_pre_hook`` / ``register_step_post_hook`` give exactly those two moments,
so ``attach`` needs nothing else from the loop. The measurements are the step meter's
(``sgdwalk.meter``), the code the built-in trainer drives too.

What the Walker never does is change the user's training: it measures on a private eager copy of
the model (``sgdwalk.probe.Evaluator``; a compiled or DDP-wrapped model is unwrapped first, so
Hessian-vector products never go through a compiled graph), and restores the RNG states it finds.
A failure inside the Walker (a full disk, a bug) ends the session ``failed`` with one line on
stderr, and training goes on unmeasured.

Signals (see ``WalkerSignals``): SIGUSR1/SIGUSR2 pause and resume between steps (a dashboard's
``p``); SIGTERM and SIGHUP, where the script left them at their defaults (which kill with no chance
to record an ending), raise ``KeyboardInterrupt`` as Ctrl+C does, outside the Walker's own work.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from sgdwalk.batches import LossFn, unwrap
from sgdwalk.config import DEFAULT_PROBE
from sgdwalk.errors import ConfigError, StorageError
from sgdwalk.meter import StepMeter
from sgdwalk.probe import CHUNK, flat_params, has_batchnorm
from sgdwalk.records import (
    FAILED,
    FINISHED,
    NOTE_EVENT,
    PAUSED_EVENT,
    RESUMED_EVENT,
    SKIPPED_EVENT,
    CurvatureMeasured,
    Record,
)
from sgdwalk.session import check_session_name, session_dir
from sgdwalk.sharpness import EdgeWatch
from sgdwalk.walker_parts import (
    Budget,
    LoopTap,
    ScriptGuard,
    curvature_meter,
    optimizer_params,
    parse_curvature_every,
)
from sgdwalk.walker_probe import ProbeSetup
from sgdwalk.walker_session import WalkerSession

SESSION_ENV = "SGDWALK_SESSION"  # set by `sgdwalk exec` for the script it starts
SESSIONS_DIR_ENV = "SGDWALK_SESSIONS"  # the CLI's sessions folder variable too


class Walker:
    """Measures every optimiser step of a model into an sgdwalk session (see the README).

    ``probe``: the fixed set the slices are measured on, taken once: tensors ``(x, y)``, a batch,
    a ``Dataset`` or a ``DataLoader`` (its first ``probe_size`` examples). ``loss_fn(model, batch)``
    returns the mean loss of a batch; by default cross-entropy of ``model(x)`` against ``y``.
    ``session``: the session's name (``$SGDWALK_SESSION`` wins, so ``sgdwalk exec`` can name it).
    ``budget``: measure at most this fraction of the training time (every N-th step, N adapted).
    ``decompose``: split each measured step by the top-k eigenvectors of the latest curvature
    pass (``hessian_every``): the dominant fraction and the losses of both parts.
    ``chunk``: probe examples per forward pass; for a model with BatchNorm (which normalises each
    chunk with its own statistics) it is ``batch_size`` when given, as in training, else 1,024;
    without BatchNorm a size for speed (``sgdwalk.probe.speed_chunk``).
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
        _check(points >= 1, "points must be at least 1")
        _check(measure_every >= 0, "measure_every must be 0 (off) or more")
        _check(budget is None or budget > 0, "budget must be a positive fraction")
        self.model = model
        self.module = unwrap(model)
        self.loss_fn = loss_fn
        params = list(self.module.parameters())
        _check(bool(params), "the model has no parameters")
        self.device = params[0].device
        # BatchNorm normalises a probe chunk with its own statistics: chunks of the training
        # batch size, as in training (the built-in trainer's probe rule), or 1,024 when it is not
        # given; without BatchNorm any size will do, so one for speed alone (None here)
        bn_chunk = (batch_size or CHUNK) if has_batchnorm(self.module) else None
        self.setup = ProbeSetup(self.module, probe, loss_fn, probe_size, chunk or bn_chunk,
                                slice_mode)  # fmt: skip
        self.probe, self.probe_n, self.chunk = self.setup.probe, self.setup.n, self.setup.chunk
        self.chunks, self.evaluator = self.setup.chunks, self.setup.evaluator
        self.shard = self.setup.shard  # None, or this rank's rows under torch.distributed
        self.writes = self.shard is None or self.shard.leader  # rank 0 alone writes the session
        self.meter = StepMeter(self.module, self.evaluator, self.chunks, points, measure_every)
        if decompose:  # split each step by the latest top-k eigenvectors
            self.meter.basis = lambda: self._curvature.basis() if self._curvature else None
        self.settings = {"points": points, "measure_every": measure_every, "top_k": top_k,
                         "hessian_every": None if hessian_every is None else str(hessian_every),
                         "probe": self.probe_n, "budget": budget, "seed": seed}  # fmt: skip
        self.curvature_every = parse_curvature_every(hessian_every)
        self.top_k, self.seed = top_k, seed
        self.budget = Budget(budget) if budget is not None else None
        self.batch_size, self.total_steps, self.meta = batch_size, total_steps, dict(meta or {})
        self.name, where = _where(session, sessions_dir, self.module)
        check_session_name(self.name)
        self.directory = session_dir(Path(where), self.name)
        self.step = 0
        self.epoch = 1  # the loop may set it; the records carry it
        self.optimizer: torch.optim.Optimizer | None = None
        self.record = WalkerSession(self, self.writes)  # the session file, epochs, ending
        self.guard = ScriptGuard(self.close)  # signals, an uncaught exception, exit
        self.signals = self.guard.signals
        self._hooks: list[Any] = []
        self.tap = LoopTap()  # batch losses and sizes since the last step
        self._open_step = False  # before_step came and after_step not yet
        self._scaler: Any = None
        self._curvature: Any = None
        self._edge = EdgeWatch()  # λ1 against the optimiser's (2 + 2β)/η
        self._closed = False

    # -- wiring

    def attach(self, optimizer: torch.optim.Optimizer, scaler: Any = None, *,
               before: bool = True) -> Walker:  # fmt: skip
        """Measure every ``optimizer.step()`` through its step hooks, and take the batch loss a
        model returns itself (``watch_loss``). With a ``GradScaler``, the steps it skips are
        recorded. ``before=False``: the caller calls ``before_step`` (a framework whose step runs
        forward and backward inside ``optimizer.step(closure)``, where the pre-hook is too early).
        """
        self.optimizer = optimizer
        if before:
            self._hooks.append(optimizer.register_step_pre_hook(lambda *_: self.before_step()))
        self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.after_step()))
        if scaler is not None:
            self._watch_scaler(scaler)
        self.watch_loss()
        self._open()
        return self

    def watch_loss(self) -> None:
        """Take the batch loss from the model's output when it carries one (``output.loss`` or
        ``output["loss"]``, as Hugging Face models return in training mode)."""
        model, tap = self.model, self.tap

        def capture(module: nn.Module, args: Any, output: Any) -> None:
            # the Walker's private copy carries this hook too, hence the check
            if module is model and module.training:
                tap.capture(args, output)

        self._hooks.append(self.model.register_forward_hook(capture))

    def _watch_scaler(self, scaler: Any) -> None:
        original = scaler.step

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            taken = self.step
            out = original(optimizer, *args, **kwargs)
            if self.step == taken and not self._closed:
                self._event("info", SKIPPED_EVENT, _skip_message(self.step, scaler))
            return out

        scaler.step = step
        self._scaler = (scaler, original)

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
        with self._working():
            if self._open_step:
                self.skipped()
            self._open()
            self._hold_while_paused()
            if self.epoch != self.record.epoch:
                self.record.end_epoch()
            if self.step == 0 and self.curvature_every:
                self._curvature_pass()  # θ_0, as the built-in trainer does
            self.step += 1
            self._open_step = True
            if self.budget is not None:
                every = self.budget.every(self.meter.every)
                if self.shard is not None and self.budget.decides:
                    every = self.shard.agree(every)  # every rank measures the same steps
                self.meter.every = every
            self.meter.before_update(self.module, self.step)

    def skipped(self, why: str = "inf/NaN gradients") -> None:
        """The step begun with ``before_step`` was not taken (an AMP scaler skipped it): it is
        recorded as skipped, not measured as a zero move."""
        if not self._open_step or self._closed:
            return
        self._open_step = False
        self.step -= 1
        self.meter.discard()
        self._event("info", SKIPPED_EVENT, f"the update after step {self.step} was skipped "
                    f"({why}): not measured")  # fmt: skip

    def after_step(
        self, loss: torch.Tensor | float | None = None, batch_size: int | None = None
    ) -> None:
        """After ``optimizer.step()``: measure the update and store its record."""
        if self._closed:
            return
        if loss is not None:
            self.report(loss, batch_size)
        if not self._open_step:
            return  # a step whose start the Walker did not see (attached mid-step)
        self._open_step = False
        with self._working():
            lr = self._lr()
            batch_loss, size = self.tap.take()
            size = size or self.batch_size or 0
            rec = self.meter.after_update(self.module, self.step, self.epoch, lr, size,
                                          batch_loss)  # fmt: skip
            self.record.stepped(rec)
            for note in self.evaluator.take_notes():  # what the slice chose for itself
                self._event("info", NOTE_EVENT, note)
            if self.budget is not None:
                self.budget.measured(rec.measured)
            if self.curvature_every and self.step % self.curvature_every == 0:
                self._curvature_pass()

    def _lr(self) -> float:
        if self.optimizer is None:
            return math.nan
        return float(self.optimizer.param_groups[0].get("lr", math.nan))

    def _curvature_pass(self) -> None:
        if self._curvature is None:
            self._curvature = curvature_meter(self)
        started = time.perf_counter()
        self.evaluator.load(flat_params(self.module))
        for rec in self._curvature.run_pass(self.step, self.epoch):
            self._write(rec)
            if isinstance(rec, CurvatureMeasured):
                hyper = optimizer_params(self.optimizer) if self.optimizer is not None else {}
                self._edge.momentum = _number(hyper.get("momentum"))
                self._edge.weight_decay = _number(hyper.get("weight_decay"))
                event = self._edge.check(rec, self._lr(), self.meter.elapsed())
                if event is not None:
                    self._write(event)
        if self.budget is not None:
            self.budget.left_out(time.perf_counter() - started)

    # -- pausing, signals, failures

    def _hold_while_paused(self) -> None:
        if not self.signals.paused:
            return
        self._event("info", PAUSED_EVENT, f"training held after step {self.step}")
        while self.signals.paused and not self.signals.stop_pending:
            time.sleep(0.05)
        if not self.signals.stop_pending:
            self._event("info", RESUMED_EVENT, "training goes on")

    @contextlib.contextmanager
    def _working(self) -> Any:
        """The Walker's own work: deferred stops, restored RNG, failures kept from training."""
        self.signals.busy = True
        started = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=_cuda_devices(self.device)), torch.no_grad():
                yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the user's training must survive its instrument
            self._give_up(e)
        finally:
            self.signals.busy = False
            if self.budget is not None:
                self.budget.spent(time.perf_counter() - started)
        self.signals.raise_pending_stop()

    def _give_up(self, e: Exception) -> None:
        cause = str(e) if isinstance(e, StorageError) else f"{type(e).__name__}: {e}"
        with contextlib.suppress(OSError):
            print(f"sgdwalk: measuring stopped, training goes on: {cause}", file=sys.stderr)
        with contextlib.suppress(Exception):
            self.close(FAILED, cause)
        self._closed = True

    # -- the session

    def _open(self) -> None:
        if not self._closed and self.record.open():
            self.guard.install()

    def _write(self, rec: Record) -> None:
        self.record.write(rec)

    def _event(self, level: str, kind: str, message: str) -> None:
        self.record.event(level, kind, message)

    def close(self, status: str = FINISHED, message: str = "") -> None:
        """End the session with ``status`` (finished, interrupted, failed); remove every hook and
        handler. Idempotent; also called at exit, so a script that forgets it still ends well."""
        if self._closed:
            return
        self._closed = True
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if self._scaler is not None:
            scaler, original = self._scaler
            scaler.step = original
        self.guard.remove()
        try:
            self.record.end(status, message)
        finally:
            if self.shard is not None:
                self.shard.close()

    def __enter__(self) -> Walker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close(FINISHED)
        else:
            self.close(*self.guard.ending(kind, e))

    def examples(self, idx: torch.Tensor) -> list[tuple[Any, torch.Tensor]]:
        """Probe examples ``idx`` as evaluator chunks (the curvature pass's alignment draws)."""
        return self.setup.examples(idx)


def _number(value: Any) -> float:
    """A hyper-parameter as a float (0 when absent or not a number: Adam has no momentum)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"Walker: {message}")


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _skip_message(step: int, scaler: Any) -> str:
    scale = scaler.get_scale() if hasattr(scaler, "get_scale") else math.nan
    return (f"the GradScaler skipped the update after step {step} (inf/NaN gradients; "
            f"scale now {scale:g}): not measured")  # fmt: skip


def _where(
    session: str | None, sessions_dir: str | os.PathLike[str] | None, model: nn.Module
) -> tuple[str, str | os.PathLike[str]]:
    """The session's name and folder. Under ``sgdwalk exec`` (``$SGDWALK_SESSION`` set) the
    dashboard waits on the name and folder it chose, so they win over the script's arguments;
    otherwise an argument wins over ``$SGDWALK_SESSIONS``, then ``./sessions``."""
    env_dir = os.environ.get(SESSIONS_DIR_ENV)
    if os.environ.get(SESSION_ENV):
        return os.environ[SESSION_ENV], env_dir or sessions_dir or "sessions"
    folder = sessions_dir or env_dir or "sessions"
    return session or _free_name(model, Path(folder)), folder


def _free_name(model: nn.Module, folder: Path) -> str:
    """MODELCLASS-YYYYmmdd-HHMMSS, with -2, -3, ... if that is taken."""
    base = f"{type(model).__name__.lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (folder / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name

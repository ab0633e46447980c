"""The built-in training loop, as a plain generator of records: one client of the Instrument.

``prepare(config)`` does everything that can fail on bad input (device, data, model, checks against
the data) before any session exists; ``Run.records(should_stop)`` then trains and yields one
``StepMeasured`` per update, an ``EpochEnded`` per epoch, ``CurvatureMeasured`` on the curvature
schedule, and an ending event. The generator is lazy, so a consumer pauses training simply by not
asking for the next record. What is measured, and how, is the Instrument's
(``sgdwalk.instrument``), the same one a user's own loop drives through ``sgdwalk.Walker``; the
run owns only the training: data, batches, gradient descent, DDP ranks, the validation split.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Generator, Iterator

import torch
from torch import nn

from sgdwalk import torchrun
from sgdwalk.batches import make_chunks, pieces
from sgdwalk.config import ConfigError, RunConfig, fail
from sgdwalk.cpu import choose_threads
from sgdwalk.curvature.measure import hessian_indices
from sgdwalk.data import Data, load_data
from sgdwalk.errors import Stopped
from sgdwalk.instrument import Instrument
from sgdwalk.models import build_model, count_params, fit_notes
from sgdwalk.probe import Chunks, Evaluator, flat_params, has_batchnorm, probe_chunk
from sgdwalk.probe_set import ProbeSet
from sgdwalk.ranks import GD_CHUNK, Ranks
from sgdwalk.records import DIVERGED, FINISHED, INTERRUPTED, EventLogged, Record
from sgdwalk.settings import Settings


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda was asked for but CUDA is not available on this machine")
    return torch.device(name)


BURST = 4  # under a time budget, measured steps come in runs of 4 (sgdwalk.sampling: why)


def settings_of(cfg: RunConfig) -> Settings:
    """What the run measures, from its config."""
    return Settings(points=cfg.points, measure_every=cfg.measure_every, slice_mode=cfg.slice_mode,
                    hessian_every=cfg.hessian_every, top_k=cfg.top_k,
                    align_sizes=cfg.align_batch_sizes, align_samples=cfg.align_samples,
                    seed=cfg.seed, decompose=cfg.decompose,
                    batch_sharpness=cfg.batch_sharpness, track_sharpness=cfg.track_sharpness,
                    budget=cfg.budget.fraction,
                    budget_auto=cfg.budget.auto, burst=BURST)  # fmt: skip


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``--optimizer`` with its knobs (``validate`` has refused those it lacks); betas and ε left
    unset are torch's own defaults (its weight decay is the flag's, 0 unless given, AdamW too)."""
    params, lr, wd = model.parameters(), cfg.lr, cfg.weight_decay
    eps = 1e-8 if cfg.eps is None else cfg.eps  # torch's default for all three
    if cfg.optimizer in ("adam", "adamw"):
        betas = (0.9, 0.999) if cfg.betas is None else (cfg.betas.beta1, cfg.betas.beta2)
        kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return kind(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, eps=eps, weight_decay=wd, momentum=cfg.momentum)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)


class Run:
    """A prepared training run: data, model, optimizer, and the Instrument that measures it.
    See ``prepare``; ``notes`` and ``threads_reason`` are what ``prepare`` found out."""

    def __init__(self, cfg: RunConfig, data: Data, model: nn.Module, device: torch.device,
                 ranks: Ranks, notes: list[str], threads_reason: str = "") -> None:  # fmt: skip
        self.cfg, self.data, self.model, self.device = cfg, data, model, device
        self.ranks, self.notes, self.threads_reason = ranks, notes, threads_reason
        self.optimizer = build_optimizer(cfg, model)
        self.batch_size = cfg.batch_size.of(data.n_train)
        per_epoch = (math.floor if cfg.drop_last else math.ceil)(data.n_train / self.batch_size)
        self.steps_per_epoch = 1 if cfg.full_batch else per_epoch
        self.gen = torch.Generator().manual_seed(cfg.seed)
        evaluator = Evaluator(model)
        self.probe = self._probe_set(evaluator)
        self.val_chunks = make_chunks(data.inputs(slice(None), "val"), data.y_val, self.probe.chunk)
        self.instrument = Instrument(model, evaluator, self.probe, settings_of(cfg), self.optimizer,
                                     total_steps=self.steps_per_epoch * cfg.epochs)  # fmt: skip
        self.evaluator = evaluator
        self.clock: Callable[[], float] = self.instrument.elapsed

    def _probe_set(self, ev: Evaluator) -> ProbeSet:
        """The fixed probe set, drawn once from the training split with the session seed (for
        ``--probe batch``, the default-size one serves the Hessian and the epoch summary)."""
        cfg, data = self.cfg, self.data
        g = torch.Generator().manual_seed(cfg.seed + 7919)
        rows = torch.randperm(data.n_train, generator=g)[: cfg.probe.size(data.n_train)]
        rows = rows.sort().values.to(self.device)
        hessian = hessian_indices(rows, data.n_train, cfg.hessian_probe, cfg.seed)

        def pool(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            idx = idx.to(data.y_train.device)
            return data.inputs(idx), data.y_train[idx]

        with_bn = GD_CHUNK if cfg.full_batch else self.batch_size  # the training batch
        chunk = cfg.probe_chunk or probe_chunk(ev, pool(rows[:2]), with_bn)
        return ProbeSet(pool, data.n_train, rows, chunk, peers=self.ranks.peers,
                        hessian_rows=None if hessian is rows else hessian,
                        fixed=cfg.probe.fixed)  # fmt: skip

    @property
    def info(self) -> dict[str, object]:
        """What the session stores about the run beside its config (sizes, device, versions)."""
        data, cfg = self.data, self.cfg
        return self.instrument.info(self.model, self.device, self.ranks.world) | {
            "n_train": data.n_train, "n_val": int(data.y_val.shape[0]),
            "input_shape": list(data.input_shape), "classes": data.num_classes,
            "probe_size": self.probe.size if cfg.probe.fixed else None,
            "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.steps_per_epoch * cfg.epochs, "threads_reason": self.threads_reason,
        }  # fmt: skip

    # ------------------------------------------------------------ the loop

    def records(
        self, should_stop: Callable[[], bool] = lambda: False, bare: bool = False
    ) -> Generator[Record, None, None]:
        """Train and yield records; ``bare`` keeps only the training fields (bench).

        ``should_stop`` is asked before each step and, through the Instrument, between the probe
        chunks and Hessian-vector products of every measurement, so a stop takes effect within
        one chunk's pass even inside a curvature pass; the run then ends interrupted.
        """
        self.instrument.restart(self.model, measure=not bare)
        at = [0, 0]  # the step and epoch reached
        with self.instrument.stoppable(should_stop):
            try:
                yield from self._train(should_stop, at)
            except Stopped:
                yield self._end(INTERRUPTED, at[0], at[1], "stopped by request")
            except RuntimeError as e:  # a collective failed: a rank died, hung or stopped first
                if (message := torchrun.lost_peer(e, self.ranks.world)) is None:
                    raise
                message = "stopped by request" if _stop_follows(should_stop) else message
                yield self._end(INTERRUPTED, at[0], at[1], message)

    def _train(self, should_stop: Callable[[], bool], at: list[int]) -> Iterator[Record]:
        ins, step = self.instrument, 0
        for note in self.notes:
            yield EventLogged(0, 0, "warning", "warning", note, ins.elapsed())
        if ins.curvature_due("steps", 0):  # at the start, before the first update
            yield from ins.curvature_pass(self.model, 0, 0)
        for epoch in range(1, self.cfg.epochs + 1):
            self.model.train()
            for idx in self._batches():
                at[:] = step, epoch
                if should_stop():
                    raise Stopped
                step += 1
                step_records = self._update(step, epoch, idx)
                at[0] = step
                yield from step_records
                loss = step_records[0].batch_loss  # type: ignore[union-attr]
                if not math.isfinite(loss) and not self.cfg.allow_divergence:
                    yield self._end(DIVERGED, step, epoch, f"loss became {loss} at step {step}")
                    return
                if ins.curvature_due("steps", step):
                    yield from ins.curvature_pass(self.model, step, epoch)
            yield ins.epoch_ended(epoch, step, summary_of(self))
            if ins.curvature_due("epochs", epoch, step):
                yield from ins.curvature_pass(self.model, step, epoch)
        yield self._end(FINISHED, step, self.cfg.epochs, f"finished {step} steps")

    def _update(self, step: int, epoch: int, idx: torch.Tensor) -> list[Record]:
        """One optimiser update, measured by the Instrument around ``optimizer.step()``."""
        loss = self._train_step(idx)
        self.instrument.before_update(self.model, step, lambda: self.probe.examples(idx))
        self.optimizer.step()
        return self.instrument.after_update(self.model, step, epoch, len(idx), loss)

    def _end(self, status: str, step: int, epoch: int, message: str) -> EventLogged:
        """The event that ends a run; its kind is the session's final status."""
        level = "error" if status == DIVERGED else "info"
        return EventLogged(step, epoch, level, status, message, self.clock())  # type: ignore[arg-type]

    def _train_step(self, idx: torch.Tensor) -> torch.Tensor:
        """Forward/backward on the mini-batch (or the whole split in chunks, for GD)."""
        self.optimizer.zero_grad(set_to_none=True)
        crit = nn.functional.cross_entropy
        if self.ranks.world > 1:
            return self.ranks.train_step(self, idx)
        if not self.cfg.full_batch:
            x = self.data.train_batch(idx, self.gen)
            loss = crit(self.model(x), self.data.y_train[idx])
            loss.backward()
            return loss
        total = torch.zeros((), device=self.device)
        n = len(idx)
        for part in pieces(idx, GD_CHUNK):
            x = self.data.train_batch(part, self.gen)
            # mean over the whole split = Σ_chunks (|chunk|/N) · mean over the chunk
            part_loss = crit(self.model(x), self.data.y_train[part]) * (len(part) / n)
            part_loss.backward()
            total += part_loss.detach()
        return total

    def _batches(self) -> Iterator[torch.Tensor]:
        n = self.data.n_train
        if self.cfg.full_batch:
            yield torch.arange(n, device=self.device)
            return
        perm = torch.randperm(n, generator=self.gen).to(self.device)
        batches = torch.split(perm, self.batch_size)
        yield from batches[: self.steps_per_epoch]  # --drop-last leaves out a short last batch


def summary_of(run: Run) -> tuple[float, float, float, float] | None:
    """The epoch's train and validation summary (None: not measuring). sgdwalk's own work, which
    a plain loop does not do: the time budget counts it."""
    if not run.instrument.measuring:
        return None
    with run.instrument.pace.own():
        return epoch_summary(run.evaluator, run.model, run.probe.whole, run.val_chunks)


def epoch_summary(
    ev: Evaluator, model: nn.Module, train: Chunks, val: Chunks
) -> tuple[float, float, float, float]:
    """Train loss/accuracy on the probe set (batch statistics, as probed) and validation
    loss/accuracy (running BatchNorm statistics), at the model's θ."""
    ev.load(flat_params(model))
    on_train = ev.loss_and_accuracy(train)
    ev.sync_buffers(model)
    on_val = ev.loss_and_accuracy(val, eval_mode=True)
    tl, ta, vl, va = torch.cat([on_train, on_val]).tolist()  # sync point: once per epoch
    return tl, ta, vl, va


def prepare(cfg: RunConfig) -> Run:
    """Load data and model and check the config against them; raises ConfigError / DataError."""
    device = choose_device(cfg.device)
    if torchrun.distributed_run(cfg):  # one of the processes torchrun started
        device = torchrun.join(device)
    threads, why = choose_threads(cfg.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.dataset, cfg.data_dir, device, cfg.download, cfg.augment, cfg.train_size)
    try:
        model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.batchnorm,
                            cfg.wrn_depth, cfg.wrn_width).to(device)  # fmt: skip
    except (RuntimeError, MemoryError) as e:  # torch's allocators say "out of memory" so
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model {cfg.model}: cannot build it on {device}: {first}") from None
    check_against_data(cfg, data.n_train, count_params(model), data.available)
    min_batch = 1 if trains_on_one(model, data.inputs(slice(0, 1))) else 2
    notes = check_batch_sizes(cfg, data.n_train, min_batch)
    if notes:  # each epoch's last batch is too short for BatchNorm: left out
        cfg = dataclasses.replace(cfg, drop_last=True)
    ranks = Ranks.of(model, device)
    notes += fit_notes(cfg.model, data.input_shape)
    if ranks.world > 1 and has_batchnorm(model):
        notes.append(f"BatchNorm normalises each rank's part of the batch ({ranks.world} "
                     "ranks): training differs slightly from one process's; the probe's "
                     "statistics are per chunk as always (--no-batchnorm for an exact match)")  # fmt: skip
    return Run(cfg, data, model, device, ranks, notes, why)


STOP_RACE = 2.0  # seconds a lost rank waits for a stop asked of every rank at once to reach it


def _stop_follows(should_stop: Callable[[], bool]) -> bool:
    """After a collective failed: whether a stop was asked here too. A stop asked of every rank
    (Ctrl+C through torchrun) reaches them a little apart, and the first to end breaks the
    others' collective before theirs arrives, so a short wait tells a stop from a lost rank."""
    deadline = time.monotonic() + STOP_RACE
    while not should_stop():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def trains_on_one(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model`` trains on a batch of one example ``x`` (BatchNorm over one value per
    channel cannot), tried on a copy, so the model and its buffers stay as they were."""
    if not has_batchnorm(model):
        return True
    trial = copy.deepcopy(model).train()
    try:
        with torch.no_grad():
            trial(x[:1])
    except ValueError:
        return False
    return True


def check_batch_sizes(cfg: RunConfig, n_train: int, min_batch: int) -> list[str]:
    """For a model that needs ``min_batch`` examples per batch: refuse batches and probe chunks
    that would hold fewer (one line); the note, when each epoch's last batch is to be left out."""
    if min_batch < 2:
        return []
    world = torchrun.world_size(cfg)
    if cfg.probe_chunk is not None and cfg.probe_chunk < min_batch:
        raise ConfigError(f"--probe-chunk {cfg.probe_chunk}: BatchNorm normalises each probe "
                          f"chunk by its own statistics and needs at least {min_batch} "
                          "examples")  # fmt: skip
    batch = cfg.batch_size.of(n_train)
    part = "" if world == 1 else f" per process (--nproc {world} splits each batch)"
    if batch // world < min_batch:
        raise ConfigError(f"--batch-size {batch}: {cfg.model}'s BatchNorm needs at least "
                          f"{min_batch} examples per batch{part}; give at least "
                          f"{min_batch * world}, or --no-batchnorm")  # fmt: skip
    last = n_train % batch
    if cfg.drop_last or not 0 < last < min_batch * world:
        return []
    return [
        f"each epoch's last batch would hold {last} example(s), fewer than BatchNorm needs "
        f"({min_batch}{part}): it is left out, as --drop-last does"
    ]


LANCZOS_BYTES = 4 << 30  # the Lanczos basis (about 4k + 60 vectors of the model's size) fits this


def check_against_data(c: RunConfig, n_train: int, n_params: int, available: int = 0) -> None:
    """Checks that need the loaded data and model (``available``: training examples in the
    dataset before ``--train-size``)."""
    if c.train_size is not None and available and c.train_size > available:
        fail("train-size", f"{c.train_size} is more than the {available} training examples "
                            f"of {c.dataset}")  # fmt: skip
    if c.batch_size.n is not None and c.batch_size.n > n_train:
        fail("batch-size", f"{c.batch_size} is larger than the training split ({n_train} examples)")
    if c.probe.n is not None and c.probe.n > n_train:
        fail("probe", f"{c.probe.n} is larger than the training split ({n_train} examples)")
    if c.hessian_probe is not None and c.hessian_probe > n_train:
        fail("hessian-probe", f"{c.hessian_probe} is larger than the training split ({n_train})")
    if c.train_size is not None and c.train_size < 2:
        fail("train-size", "needs at least 2 examples")
    if c.hessian_every is None:
        return
    if c.top_k > n_params:
        fail("top-k", f"{c.top_k} is larger than the model's {n_params} parameters")
    basis = (4 * c.top_k + 61) * n_params * 4
    if basis > LANCZOS_BYTES:
        fail("top-k", f"{c.top_k} eigenpairs of a {n_params:,}-parameter model need a "
                       f"{basis / 2**30:.0f} GiB Lanczos basis (at most 4 GiB); ask for fewer")  # fmt: skip
    if not c.align_batch_sizes.clip(n_train):
        fail("align-batch-sizes", "no batch size left after clipping to the training size")

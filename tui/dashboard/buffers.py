"""What the dashboard knows about a run: its fixed facts, and bounded buffers fed one record at a
time.

Records arrive as fast as training makes them; the screen reads these buffers on a timer and only
redraws what changed (``dirty``). Every buffer is a ``deque(maxlen=...)`` or a small counter, so a
run of a million steps costs the dashboard the same memory as a run of a thousand. A replay seek
reads a ``History`` from indexed queries and the screen ``load``s it into the same buffers, so run,
watch and replay draw one way. ``facts_of`` reads the fixed facts from a session's info and config,
the same for every mode.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from sgdwalk.errors import ConfigError
from sgdwalk.records import (
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    PhaseProgressed,
    StepMeasured,
)
from sgdwalk.tui.figures import Figure, FigureData, Live
from sgdwalk.tui.lines import curvature_line
from sgdwalk.tui.text import optimizer_of, plain
from sgdwalk.values import Schedule

SLICE_WINDOW_MAX = 200  # the widest slice window the keys allow
TRAIL = 600  # steps kept for the cosine and batch-loss panels
EPOCHS_MAX = 10_000
CURVATURE_MAX = 200
EVENTS_MAX = 200
RATE_SPAN = 50  # steps over which steps/s is measured


@dataclass
class RunFacts:
    """The run's fixed facts, shown in the status line."""

    session: str = ""
    device: str = ""
    total_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None  # the configured size (an epoch's last batch may be smaller)
    steps_per_epoch: int | None = None
    hessian_every: Schedule | None = None  # the curvature schedule, None: off
    hyper: dict[str, float] = field(default_factory=dict)  # lr, momentum, weight decay (figures)
    layers: tuple[str, ...] = ()  # the names of the per-layer curvature's blocks
    optimizer: str = ""  # shown beside the lr unless it is plain SGD, the paper's (and default)

    def passes_after(self, step: int) -> int | None:
        """Curvature passes the run still has to make after ``step`` (None: unknown)."""
        every, total, per = self.hessian_every, self.total_steps, self.steps_per_epoch
        if every is None:
            return 0
        if not total:
            return None
        n = every.every
        if every.unit == "steps":
            return max(0, total // n - step // n)
        if not per:
            return None
        return max(0, total // per // n - step // per // n)


def _count(value: object) -> int | None:
    """A positive whole number from a session's info or config, or None (damaged, absent)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) and 0 < value < 2**62 else None


def facts_of(name: str, info: dict, config: dict | None = None) -> RunFacts:
    """The status line's fixed facts; values a session file got wrong are left out."""
    config = config or {}
    return RunFacts(session=name, device=plain(info.get("device", "")),
                    total_steps=_count(info.get("total_steps")), epochs=_count(config.get("epochs")),
                    batch_size=_count(info.get("batch_size")),
                    steps_per_epoch=_count(info.get("steps_per_epoch")),
                    hessian_every=_schedule(config),
                    hyper={k: float(v) for k in ("lr", "momentum", "weight_decay")
                           if isinstance(v := config.get(k), int | float)
                           and not isinstance(v, bool)},
                    layers=_names(info.get("layers")),
                    optimizer=optimizer_of(config) or "")  # fmt: skip


def _names(value: object) -> tuple[str, ...]:
    """Layer names from a session's info (none when absent or not a list of names)."""
    if not isinstance(value, list) or len(value) > 10_000:
        return ()
    return tuple(plain(v) for v in value)


def _schedule(config: dict) -> Schedule | None:
    """The curvature schedule of a session's config (None when off or unreadable). A Walker's
    schedule counts steps; one written before it was stored canonically ("40" for 40 steps)
    reads so too."""
    value = config.get("hessian_every")
    if value is None:
        return None
    text = str(value)
    if config.get("source") == "walker" and text.isdigit():
        text += "s"
    try:
        return Schedule.parse(text)
    except ConfigError:
        return None


@dataclass(frozen=True)
class History:
    """A run's history up to one replay position, as a seek reads it (``Buffers.load``)."""

    steps: tuple[StepMeasured, ...]  # the last ``TRAIL`` steps, in order, ending at the position
    epochs: tuple[EpochEnded, ...]
    curvature: tuple[CurvatureMeasured, ...]
    events: tuple[EventLogged, ...]
    epoch_barriers: int  # barriers so far in the position's epoch, if it has not ended


@dataclass
class Buffers:
    """Bounded history of one run, and which panels need a redraw."""

    facts: RunFacts = field(default_factory=RunFacts)
    measured: deque[StepMeasured] = field(default_factory=lambda: deque(maxlen=SLICE_WINDOW_MAX))
    trail: deque[StepMeasured] = field(default_factory=lambda: deque(maxlen=TRAIL))
    epochs: deque[EpochEnded] = field(default_factory=lambda: deque(maxlen=EPOCHS_MAX))
    curvature: deque[CurvatureMeasured] = field(default_factory=lambda: deque(maxlen=CURVATURE_MAX))
    events: deque[str] = field(default_factory=lambda: deque(maxlen=EVENTS_MAX))
    phase: str = ""
    last: StepMeasured | None = None
    epoch_barriers: int = 0  # barriers so far in the epoch that is running
    done_barriers: int = 0  # barriers in finished epochs
    decomposed: bool = False  # a step was decomposed (``--decompose``): its panel has data
    dirty: set[str] = field(default_factory=set)

    def curve_panels(self) -> frozenset[str]:
        """The curvature-slot panels with something to draw (``grid.CURVE``)."""
        names = {"alignment", "sharpness"} if self.curvature else set()
        if any(c.layer_eigenvalues for c in self.curvature):
            names.add("layers")
        if any(c.density_nodes for c in self.curvature):
            names.add("density")
        return frozenset(names | ({"decomposition"} if self.decomposed else set()))

    @property
    def barriers(self) -> int:
        return self.done_barriers + self.epoch_barriers

    def add(self, rec: object) -> None:
        """Route one record into the buffers."""
        if isinstance(rec, StepMeasured):
            self._add_step(rec)
        elif isinstance(rec, EpochEnded):
            self.epochs.append(rec)
            self.done_barriers += rec.barriers
            self.epoch_barriers = 0
            self.dirty |= {"barriers", "loss", "status"}
        elif isinstance(rec, CurvatureMeasured):
            self.curvature.append(rec)
            self.phase = ""
            self.events.append(f"· {curvature_line(rec)}")
            self.dirty |= {"alignment", "sharpness", "layers", "density", "events", "status"}
        elif isinstance(rec, EventLogged):
            self.events.append(event_line(rec))
            self.dirty.add("events")
        elif isinstance(rec, PhaseProgressed):
            self.phase = f"{rec.phase} {rec.done}/{rec.total}"
            if rec.done in (0, rec.total):
                self.events.append(f"step {rec.step}: {self.phase}")
                self.dirty.add("events")
            self.dirty.add("status")

    def _add_step(self, rec: StepMeasured) -> None:
        if self.last is not None and rec.epoch != self.last.epoch and self.epoch_barriers:
            # an epoch ended without its summary (stopped mid-way); keep the count honest
            self.done_barriers += self.epoch_barriers
            self.epoch_barriers = 0
        self.last = rec
        self.trail.append(rec)
        self.phase = ""
        if rec.measured:
            self.measured.append(rec)
            self.epoch_barriers += bool(rec.barrier)
            self.dirty |= {"slices", "barriers"}
            if rec.dominant_loss is not None:
                self.decomposed = True
                self.dirty.add("decomposition")
        self.dirty |= {"cosine", "loss", "status"}
        if self.curvature:
            self.dirty.add("sharpness")  # its threshold line follows each step's lr

    def load(self, history: History) -> None:
        """Replace what the buffers hold with a replay position's history."""
        self.measured.clear()
        self.trail.clear()
        self.epochs.clear()
        self.curvature.clear()
        self.last = None
        self.decomposed = False
        for s in history.steps:
            self.trail.append(s)
            self.last = s
            if s.measured:
                self.measured.append(s)
                self.decomposed = self.decomposed or s.dominant_loss is not None
        self.epochs.extend(history.epochs)
        self.curvature.extend(history.curvature)
        self.done_barriers = sum(e.barriers for e in self.epochs)
        self.epoch_barriers = history.epoch_barriers
        self.events.clear()
        self.events.extend(event_line(ev) for ev in history.events)
        self.dirty |= {"slices", "barriers", "cosine", "loss", "alignment", "sharpness",
                       "decomposition", "layers", "density", "status", "events"}  # fmt: skip

    def figure_data(self, figure: Figure, window: int) -> FigureData:
        """What a figure's panel draws, as the figure declares it needs (slices: the last
        ``window`` measured steps)."""
        needs = figure.needs
        config = {**self.facts.hyper, "optimizer": self.facts.optimizer}  # (figures: its line)
        data = FigureData(self.facts.session, config=config,
                          info={"layers": list(self.facts.layers)})  # fmt: skip
        if needs.steps == "measured":
            data.steps = list(self.measured)[-window:]
        elif needs.steps == "all":
            data.steps = list(self.trail)
        if needs.epochs:
            data.epochs = list(self.epochs)
        if needs.curvature is not None:
            data.curvature = list(self.curvature)[-needs.curvature :] if needs.curvature else list(
                self.curvature)  # fmt: skip
        return data

    def live(self, window: int) -> Live:
        """The running counts a panel's title shows."""
        return Live(window=window, barriers=self.barriers, epoch_barriers=self.epoch_barriers,
                    measurements=len(self.curvature))  # fmt: skip

    def steps_per_second(self) -> float | None:
        """Training speed over the last ``RATE_SPAN`` steps, from their recorded times, without
        the curvature passes among them (those are counted apart, in ``pass_seconds``)."""
        if len(self.trail) < 2:
            return None
        a = self.trail[max(0, len(self.trail) - 1 - RATE_SPAN)]
        b = self.trail[-1]
        passes = sum(c.seconds or 0.0 for c in self.curvature if a.step <= c.step < b.step)
        dt = b.elapsed - a.elapsed - passes
        return (b.step - a.step) / dt if dt > 0 else None

    def pass_seconds(self) -> float | None:
        """How long a curvature pass takes, on the latest few (None before the first)."""
        times = [c.seconds for c in list(self.curvature)[-3:] if c.seconds]
        return sum(times) / len(times) if times else None

    def take_dirty(self) -> set[str]:
        out, self.dirty = self.dirty, set()
        return out


def event_line(rec: EventLogged) -> str:
    mark = {"error": "✖", "warning": "!"}.get(rec.level, "·")
    return f"{mark} step {rec.step} epoch {rec.epoch}: {rec.kind}: {rec.message}"

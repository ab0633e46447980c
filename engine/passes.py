"""Curvature passes as the Instrument runs them: when one is due, at which θ, with the optimizer's
geometry, and what happens when one fails.

Why apart from the step measurements: a pass is a long, separate computation (tens of
Hessian-vector products) with state of its own (the last eigenvectors, a warm start; whether the
optimizer's edge was said to be unknown; whether the edge was reached), and it can fail where the
slices do not: a model whose operations have no double backward, memory for the Hessian's graph.
A failed pass is one warning event with a hint, never the end of the measurements: the steps go on
being measured, and the next pass is tried again.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from sgdwalk.curvature.measure import CurvatureMeter
from sgdwalk.curvature.spectrum import blocks
from sgdwalk.edge_tracker import Tracker
from sgdwalk.errors import Stopped
from sgdwalk.geometry import Geometry, Unknown, geometry
from sgdwalk.probe import Evaluator, flat_params
from sgdwalk.probe_set import ProbeSet
from sgdwalk.records import NOTE_EVENT, CurvatureMeasured, EventLogged, Record
from sgdwalk.sharpness import EdgeWatch

if TYPE_CHECKING:
    from sgdwalk.settings import Settings

HINT = ("the step measurements go on; curvature needs the loss's second derivatives through the "
        "model (README: Transformers, Bad input)")  # fmt: skip


class Passes:
    """The curvature schedule and passes of one walk (``sgdwalk.curvature`` does the work)."""

    def __init__(self, evaluator: Evaluator, probe: ProbeSet, settings: Settings,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.evaluator, self.probe, self.settings, self.clock = evaluator, probe, settings, clock
        self.meter_: CurvatureMeter | None = None  # built on the first pass
        self.edge = EdgeWatch()  # the optimizer's edge of stability (sgdwalk.geometry)
        self._said: set[str] = set()  # notes and failures said once
        self.tracker: Tracker | None = None  # --track-sharpness: started by the first pass

    def due(self, unit: str, count: int, measuring: bool = True) -> bool:
        """Whether the schedule asks for a pass after ``count`` steps or epochs (``unit``; the
        start is step 0)."""
        schedule = self.settings.hessian_every
        if schedule is None or not measuring:
            return False
        return count == 0 or schedule.due(unit, count)

    def run(self, model: nn.Module, step: int, epoch: int, optimizer: object) -> Iterator[Record]:
        """A pass at ``model``'s θ: progress, the ``CurvatureMeasured``, and an ``edge`` event the
        first time the optimizer reaches its edge; a failure is a warning event instead."""
        shape = yield from self._geometry(model, optimizer, step, epoch)
        try:
            for rec in self.meter().run_pass(flat_params(model), step, epoch, shape):
                yield rec
                if isinstance(rec, CurvatureMeasured):
                    self._restart_tracker(rec)
                    event = self.edge.check(rec, self.clock())
                    if event is not None:
                        yield event
        except (Stopped, KeyboardInterrupt, SystemExit):
            raise
        except (RuntimeError, NotImplementedError, ValueError, MemoryError) as e:
            yield EventLogged(step, epoch, "warning", "warning",
                              f"curvature pass at step {step} failed: {type(e).__name__}: "
                              f"{_first_line(e)} ({HINT})", self.clock())  # fmt: skip

    def _geometry(self, model: nn.Module, optimizer: object, step: int,
                  epoch: int) -> Generator[EventLogged, None, Geometry | None]:  # fmt: skip
        """The optimizer's geometry now (as the generator's return value), and a note the first
        time it has none: an optimizer whose edge is not known gets no line, never a wrong one."""
        if optimizer is None:
            return None
        try:
            return geometry(optimizer, list(model.parameters()))
        except Unknown as e:
            note = f"no edge-of-stability line: {e}"
            if note not in self._said:
                self._said.add(note)
                yield EventLogged(step, epoch, "info", NOTE_EVENT, note, self.clock())
            return None

    def _restart_tracker(self, rec: CurvatureMeasured) -> None:
        """From a pass with an edge: the tracker from its top vector of the edge operator (the
        Hessian's own for plain SGD, where the two share their eigenvectors)."""
        m = self.meter_
        if not self.settings.track_sharpness or m is None or rec.edge_ratio is None:
            return
        start = m.edge_start if m.edge_start is not None else m.previous
        if start is not None:
            self.tracker = Tracker(self.evaluator, self.probe, start[:, 0])

    def track(self, model: nn.Module, optimizer: object) -> float | None:
        """The edge ratio at ``model``'s θ now, one product on from the last (``sgdwalk.edge_tracker``);
        None before a pass with an edge, or with no optimizer whose edge is known."""
        if self.tracker is None or optimizer is None:
            return None
        try:
            shape = geometry(optimizer, list(model.parameters()))
        except Unknown:
            return None
        return self.tracker.step(flat_params(model), shape)

    def meter(self) -> CurvatureMeter:
        """The curvature meter, built on first use (it keeps the last pass's eigenvectors)."""
        if self.meter_ is None:
            s, probe = self.settings, self.probe
            layers = blocks(self.evaluator.shadow) if s.layer_curvature else None
            self.meter_ = CurvatureMeter(self.evaluator, probe, s.top_k,
                                         s.align_sizes.clip(probe.pool_size), s.align_samples,
                                         s.seed, clock=self.clock, layers=layers,
                                         density=s.density)  # fmt: skip
        return self.meter_

    def basis(self) -> tuple[torch.Tensor, int] | None:
        """The latest top-k eigenvectors and their step (``--decompose``), or None."""
        return self.meter_.basis() if self.meter_ is not None else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 200 else line[:199] + "…"

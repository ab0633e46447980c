"""The dashboard's panels: dumb widgets that draw what they are given.

Each chart subclasses ``PlotextPlot``, keeps its own series in bounded deques and changes only
through ``update(...)``, which redraws the figure with the shared figure functions of
``tui.charts`` (the same code ``sgdwalk export`` uses, so the screen shows what export writes).
``PlotextPlot.render()`` rebuilds the whole figure on every render, so the screen calls ``update``
from its timer, a few times a second at most, and only for panels whose data changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from sgdwalk.records import CurvatureMeasured, EpochEnded, StepMeasured
from sgdwalk.tui import charts
from sgdwalk.tui.state import CURVATURE_MAX, EPOCHS_MAX, SLICE_WINDOW_MAX, TRAIL
from textual.app import RenderResult
from textual.widgets import RichLog, Static
from textual_plotext import PlotextPlot


class Chart(PlotextPlot, can_focus=True):
    """A focusable plotext panel with a border title; subclasses define ``_draw``."""

    DEFAULT_CSS = """
    Chart { border: round $panel; padding: 0; height: 1fr; width: 1fr; }
    Chart:focus { border: round $accent; }
    """
    ALLOW_MAXIMIZE = True
    name_: str = "chart"
    empty_text: str = "waiting for data"

    def on_mount(self) -> None:
        super().on_mount()
        self.border_title = self.name_
        self._redraw()

    held = False  # a held chart takes new data but repaints only when released
    stale = False
    _version = 0  # bumped whenever the plotted data changes
    _cached: tuple[tuple[object, ...], RenderResult] | None = None

    def _redraw(self) -> None:
        self._version += 1
        if self.held:
            self.stale = True
            return
        self.refresh()

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        """Repaint with the data taken while held (each plotext repaint costs tens of ms)."""
        self.held = False
        if self._pending_title is not None:
            self.border_title, self._pending_title = self._pending_title, None
        if self.stale:
            self.stale = False
            self.refresh()

    _pending_title: str | None = None

    def _title(self, text: str) -> None:
        """A new border title repaints the whole chart, so a held chart keeps it for later."""
        if self.held:
            self._pending_title = text
        else:
            self.border_title = text

    def render(self) -> RenderResult:
        """The figure, rebuilt only when its data, size or theme changed.

        A new border title, focus or a layout pass re-renders the widget too; those reuse the
        last figure, since each plotext build costs tens of milliseconds. A rebuild starts from a
        clear figure: one built at one size and rebuilt at another does not always match one
        built at the second size directly.
        """
        key = (self.size, self._version, self.app.theme, self.theme)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        plt = self.plt
        plt.clear_figure()
        plt.title("" if self._draw(plt) else self.empty_text)
        result = super().render()
        self._cached = (key, result)
        return result

    def _draw(self, plt: object) -> bool:
        raise NotImplementedError


class SlicesChart(Chart):
    """Figure 1 over the last ``window`` measured steps."""

    name_ = "slices"
    empty_text = "waiting for the first measured step"

    def __init__(self, window: int = 20, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.steps: deque[StepMeasured] = deque(maxlen=SLICE_WINDOW_MAX)
        self.window = window

    def update(self, steps: Sequence[StepMeasured], window: int | None = None) -> None:
        if window is not None:
            self.window = window
        self.steps = deque(steps[-self.window :], maxlen=SLICE_WINDOW_MAX)
        barriers = sum(bool(s.barrier) for s in self.steps)
        self._title(f"slices · last {self.window} steps · {barriers} barriers")
        self._redraw()

    def _draw(self, plt: object) -> bool:
        charts.draw_slices(plt, list(self.steps))
        return bool(self.steps)


class BarriersChart(Chart):
    """Figure 4: barriers per finished epoch, with the running total in the title."""

    name_ = "barriers"
    empty_text = "barriers appear when an epoch ends"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.epochs: deque[EpochEnded] = deque(maxlen=EPOCHS_MAX)
        self.total = 0
        self.this_epoch = 0

    def update(self, epochs: Sequence[EpochEnded], total: int, this_epoch: int) -> None:
        self.total, self.this_epoch = total, this_epoch
        self._title(f"barriers · {total} total · {this_epoch} this epoch")
        if list(epochs) != list(self.epochs):  # mid-epoch only the title changes
            self.epochs = deque(epochs, maxlen=EPOCHS_MAX)
            self._redraw()

    def _draw(self, plt: object) -> bool:
        charts.draw_barriers(plt, list(self.epochs))
        return bool(self.epochs)


class AlignmentChart(Chart):
    """Figures 5-6: subspace alignment against batch size, one series per curvature record."""

    name_ = "alignment"
    empty_text = "alignment appears with curvature records"
    SHOWN = 4  # the latest few measurements; more would be unreadable in a terminal

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.curvature: deque[CurvatureMeasured] = deque(maxlen=CURVATURE_MAX)

    def update(self, curvature: Sequence[CurvatureMeasured]) -> None:
        self.curvature = deque(curvature, maxlen=CURVATURE_MAX)
        self.set_class(not self.curvature, "-empty")
        self._title(f"alignment · {len(self.curvature)} measurements")
        self._redraw()

    def _draw(self, plt: object) -> bool:
        shown = list(self.curvature)[-self.SHOWN :]
        charts.draw_alignment(plt, shown)
        return bool(shown)


class CosinesChart(Chart):
    """Figure 7: cosine of consecutive gradients and updates over the recent steps."""

    name_ = "cosines"
    empty_text = "cosines appear from the second step"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.steps: deque[StepMeasured] = deque(maxlen=TRAIL)

    def update(self, steps: Sequence[StepMeasured]) -> None:
        self.steps = deque(steps, maxlen=TRAIL)
        self._redraw()

    def _draw(self, plt: object) -> bool:
        charts.draw_cosines(plt, list(self.steps))
        return any(s.grad_cos is not None or s.update_cos is not None for s in self.steps)


class LossChart(Chart):
    """Mini-batch loss over the recent steps, train/validation loss at each epoch end."""

    name_ = "loss"
    empty_text = "loss appears with the first step"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.steps: deque[StepMeasured] = deque(maxlen=TRAIL)
        self.epochs: deque[EpochEnded] = deque(maxlen=EPOCHS_MAX)

    def update(self, steps: Sequence[StepMeasured], epochs: Sequence[EpochEnded]) -> None:
        self.steps = deque(steps, maxlen=TRAIL)
        self.epochs = deque(epochs, maxlen=EPOCHS_MAX)
        last = self.epochs[-1] if self.epochs else None
        acc = f" · val acc {last.val_acc:.1%}" if last else ""
        self._title(f"loss{acc}")
        self._redraw()

    def _draw(self, plt: object) -> bool:
        charts.draw_loss(plt, list(self.steps), list(self.epochs))
        return bool(self.steps or self.epochs)


class StatusLine(Static):
    """One line: where the run is, how fast, and which session."""

    DEFAULT_CSS = "StatusLine { height: 1; background: $boost; padding: 0 1; }"

    def __init__(self, **kw: object) -> None:
        super().__init__("", markup=False, **kw)  # type: ignore[arg-type]

    def update_text(self, text: str) -> None:
        self.text = text
        # one line of fixed height: no layout pass (that would repaint every chart, ~30 ms each)
        self.update(text, layout=False)

    text = ""


class EventLog(RichLog):
    """Divergence, warnings, curvature phases and the run's end; bounded."""

    DEFAULT_CSS = "EventLog { height: 4; border-top: solid $panel; padding: 0 1; }"

    def __init__(self, **kw: object) -> None:
        super().__init__(max_lines=200, wrap=False, markup=False, **kw)  # type: ignore[arg-type]
        self.can_focus = False
        self.lines_shown: deque[str] = deque(maxlen=200)

    def show(self, lines: Sequence[str]) -> None:
        """Show exactly ``lines`` (the buffer's events), appending when only new ones came."""
        new = list(lines)
        old = list(self.lines_shown)
        if new[: len(old)] == old and len(old) < len(new):
            for line in new[len(old) :]:
                self.write(line)
        elif new != old:
            self.clear()
            for line in new:
                self.write(line)
        self.lines_shown = deque(new, maxlen=200)

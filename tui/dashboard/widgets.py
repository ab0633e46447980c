"""The dashboard's widgets: one chart per figure, the status line and the event log.

A chart is one ``PlotextPlot`` subclass parameterised by its figure (``sgdwalk.tui.figures``): it
keeps the data it was last given and changes only through ``show(data, title)``, drawing with the
figure's own plotext code (the same code ``sgdwalk export`` uses, so the screen shows what export
writes). ``PlotextPlot.render()`` rebuilds the whole figure on every render, so the screen calls
``show`` from its timer, a few times a second at most, and a chart keeps its last figure until its
data, size or theme change. A drawing that fails (a bug, never bad data: the figure code skips
non-finite values) shows its error in the panel instead of ending the dashboard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from rich.text import Text
from textual.app import RenderResult
from textual.widgets import RichLog, Static
from textual_plotext import PlotextPlot

from sgdwalk.tui.figures import Figure, FigureData, Options
from sgdwalk.tui.figures.base import draw_plotext
from sgdwalk.tui.text import plain


class FigureChart(PlotextPlot, can_focus=True):
    """A focusable panel drawing one figure, with a border title."""

    DEFAULT_CSS = """
    FigureChart { border: round $panel; padding: 0; height: 1fr; width: 1fr; }
    FigureChart:focus { border: round $accent; }
    """
    ALLOW_MAXIMIZE = True

    def __init__(self, figure: Figure, **kw: object) -> None:
        super().__init__(id=figure.name, **kw)  # type: ignore[arg-type]
        self.figure = figure
        self.data = FigureData(figure.name)
        self.overlay: list[FigureData] = []  # several runs at once (``compare``), or none
        self.error: str | None = None  # the last drawing failure, for the event log
        self.deferred = False  # a deferred chart takes new data but repaints only when resumed
        self.stale = False
        self._version = 0  # bumped whenever the drawn data changes
        self._cached: tuple[tuple[object, ...], RenderResult] | None = None
        self._pending_title: str | None = None

    def on_mount(self) -> None:  # Textual runs PlotextPlot.on_mount (its theme) after this
        self.border_title = self.figure.name

    def show(self, data: FigureData, title: str) -> None:
        """New data and title; repaints only when the data differs from what is drawn."""
        self._title(title)
        if data == self.data:
            return
        self.data = data
        self._version += 1
        if self.deferred:
            self.stale = True
        else:
            self.refresh()

    def show_overlay(self, data: list[FigureData], title: str) -> None:
        """Several runs in one figure, each labelled (``sgdwalk compare``)."""
        self._title(title)
        if data == self.overlay:
            return
        self.overlay = data
        self._version += 1
        self.refresh()

    def defer(self) -> None:
        self.deferred = True

    def resume(self) -> None:
        """Repaint with the data taken while deferred (each plotext repaint costs tens of ms)."""
        self.deferred = False
        if self._pending_title is not None:
            self.border_title, self._pending_title = self._pending_title, None
        if self.stale:
            self.stale = False
            self.refresh()

    def _title(self, text: str) -> None:
        """A new border title repaints the whole chart, so a deferred one keeps it for later."""
        if self.deferred:
            self._pending_title = text
        elif text != self.border_title:
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
        try:
            drew = draw_plotext(
                self.figure,
                plt,
                self.overlay or [self.data],
                Options(width=self.size.width, height=self.size.height),
            )
            plt.title("" if drew else self.figure.empty_panel)
            result = super().render()
            self.error = None
        except Exception as e:  # a drawing bug must not end a training dashboard: show it here
            self.error = f"{type(e).__name__}: {e}"
            result = Text(f"could not draw {self.figure.name}: {self.error}", style="red")
        self._cached = (key, result)
        return result


class StatusLine(Static):
    """One line: where the run is, how fast, and which session."""

    DEFAULT_CSS = "StatusLine { height: 1; background: $boost; padding: 0 1; }"

    def __init__(self, **kw: object) -> None:
        super().__init__("", markup=False, **kw)  # type: ignore[arg-type]

    def update_text(self, text: str) -> None:
        text = plain(text)  # names and messages come from session files
        self.text = text
        # one line of fixed height: no layout pass (that would repaint every chart, ~30 ms each)
        self.update(text, layout=False)

    text = ""


WARNING_MARKS = ("!", "✖")  # the event lines of warnings and errors (``buffers.event_line``)


class EventLog(RichLog):
    """Divergence, warnings, curvature phases and the run's end; bounded. Long lines wrap (a
    number is never cut), and the latest warning stays in the top border after newer events
    scroll it away."""

    DEFAULT_CSS = "EventLog { height: 4; border-top: solid $panel; padding: 0 1; }"

    def __init__(self, **kw: object) -> None:
        super().__init__(max_lines=200, wrap=True, markup=False, **kw)  # type: ignore[arg-type]
        self.can_focus = False
        self.lines_shown: deque[str] = deque(maxlen=200)

    def show(self, lines: Sequence[str]) -> None:
        """Show exactly ``lines`` (the buffer's events), appending when only new ones came."""
        new = list(lines)
        old = list(self.lines_shown)
        if new[: len(old)] == old and len(old) < len(new):
            for line in new[len(old) :]:
                self.write(plain(line))
        elif new != old:
            self.clear()
            for line in new:
                self.write(plain(line))
        self.lines_shown = deque(new, maxlen=200)
        shown = self._in_view(new)
        warning = next((ln for ln in reversed(new) if ln.startswith(WARNING_MARKS)), "")
        self.border_title = "" if warning in shown else plain(warning)

    def _in_view(self, lines: list[str]) -> list[str]:
        """The last lines, as many as the log's rows hold once long ones wrap."""
        width, rows = max(1, self.size.width - 2), max(1, self.size.height - 1)
        out: list[str] = []
        for line in reversed(lines):
            rows -= -(-max(1, len(line)) // width)
            if rows < 0:
                break
            out.append(line)
        return out

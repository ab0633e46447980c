"""Modal screens: the help page, the quit question, and replay's ``:`` prompt."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from sgdwalk.tui.text import plain

PANELS_HELP = """\
Panels
  slices     Figure 1: the loss along each step's line θ_t + αΔ_t, for the
             last N steps; dots: the loss at each step; dashed: valley floors
  barriers   Figure 4: barriers crossed per epoch; the total in the title
  loss       mini-batch loss per step; train/validation loss at epoch ends
  cosine     Figure 7: cosine of consecutive gradients (and updates)
  alignment  Figures 5-6: how much a batch-b gradient lies in the top-k
             Hessian subspace, by batch size (once curvature is measured)
  status     step, epoch, speed, ETA, lr, batch size, device, session
  events     divergence, warnings, curvature passes, the run's end
"""


class HelpScreen(ModalScreen[None]):
    """Every key of the current mode, and one sentence per panel."""

    # A fixed width: an auto-width container around an auto-width Static measures to nothing
    # (the page was an empty box); the text scrolls when the terminal is shorter than it.
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 80; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1; }
    HelpScreen Static { width: 100%; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def __init__(self, keys: list[tuple[str, str]], title: str) -> None:
        super().__init__()
        self.keys, self.title_ = keys, title

    def compose(self) -> ComposeResult:
        lines = [f"{self.title_} — keys"]
        lines += [f"  {k:<16} {what}" for k, what in self.keys]
        lines += ["", PANELS_HELP, "escape or ? closes this page"]
        with VerticalScroll():
            yield Static("\n".join(lines), markup=False)


class QuitScreen(ModalScreen[str]):
    """Asks what quitting means for the run; dismisses with 'leave', 'stop' or 'cancel'."""

    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical { width: 70; max-width: 100%; height: auto; border: round $warning;
        background: $surface; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,n,c", "choose('cancel')", "cancel"),
        Binding("s,y", "choose('stop')", "stop run"),
        Binding("l", "choose('leave')", "leave running"),
    ]

    def __init__(self, text: str, can_leave: bool, can_stop: bool = True) -> None:
        super().__init__()
        self.text, self.can_leave, self.can_stop = text, can_leave, can_stop

    def compose(self) -> ComposeResult:
        choices = []
        if self.can_leave:
            choices.append("[l] leave it running and quit")
        if self.can_stop:
            choices.append("[s] stop the run cleanly and quit")
        choices.append("[esc] keep watching")
        with Vertical():
            yield Static(plain(self.text) + "\n\n" + "\n".join(choices), markup=False)

    def action_choose(self, choice: str) -> None:
        if (choice == "leave" and not self.can_leave) or (choice == "stop" and not self.can_stop):
            return
        self.dismiss(choice)


class SeekScreen(ModalScreen[str]):
    """Replay's ``:`` prompt: a step, an epoch (e3) or a relative jump (+100)."""

    DEFAULT_CSS = """
    SeekScreen { align: center bottom; }
    SeekScreen > Input { width: 60; max-width: 100%; margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape", "dismiss('')", "cancel")]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="go to: step 1234, epoch e3, jump +100 / -100", id="seek")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

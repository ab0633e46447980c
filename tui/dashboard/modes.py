"""The three modes of the dashboard: a run trained here, a run watched, a session replayed.

Each adds its keys and its state to ``DashboardScreen`` and says where records come from: the
training worker's queue (``run``), the follower's queue (``watch``), or the replay cursor's frames.
"""

from __future__ import annotations

import math
import time

from textual.binding import Binding

from sgdwalk.errors import SessionError
from sgdwalk.records import FAILED, FINISHED, RESUMED_EVENT, RUNNING, EventLogged
from sgdwalk.tui.dashboard.buffers import RunFacts
from sgdwalk.tui.dashboard.dialogs import QuitScreen, SeekScreen
from sgdwalk.tui.dashboard.replay import MAX_SPEED, ReplayCursor, parse_target
from sgdwalk.tui.dashboard.screen import PANELS, DashboardScreen
from sgdwalk.tui.dashboard.sources import FollowSource, LiveSource
from sgdwalk.tui.dashboard.status import join
from sgdwalk.tui.text import plain

STATE_MARKS = {FINISHED: "✔", FAILED: "✖", RUNNING: "▶"}
SILENT_AFTER = 3.0  # seconds without a heartbeat before the status line says so
REPLAY_FPS = 10.0
MAX_FPS = 50.0


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
                    curvature_every=_schedule(config.get("hessian_every")),
                    hyper={k: float(v) for k in ("lr", "momentum", "weight_decay")
                           if isinstance(v := config.get(k), int | float)
                           and not isinstance(v, bool)})  # fmt: skip


def phase_text(phase: dict | None) -> str:
    """ "curvature 12/63 · 41 s" from a heartbeat's phase record ("" when there is none)."""
    if not phase:
        return ""
    done, total, since = phase.get("done"), phase.get("total"), phase.get("since")
    text = plain(phase.get("phase", ""))
    if isinstance(done, int) and isinstance(total, int):
        text += f" {done}/{total}"
    if isinstance(since, int | float) and math.isfinite(since):
        text += f" · {max(0.0, time.time() - since):.0f} s"
    return text


def _schedule(value: object) -> tuple[str, int] | None:
    """The curvature schedule of a session's config (None when off or unreadable)."""
    from sgdwalk.config import parse_hessian_every
    from sgdwalk.errors import ConfigError

    try:
        return parse_hessian_every(str(value)) if value is not None else None
    except ConfigError:
        return None


class LiveScreen(DashboardScreen):
    """``sgdwalk run``: the engine trains in this process, in a worker thread."""

    BINDINGS = [
        Binding("p", "pause", "pause/resume"),
        Binding("s", "stop", "stop run"),
    ]
    KEYS_HELP = [
        ("p", "pause / resume training"),
        ("s", "stop the run cleanly (saved as interrupted)"),
        *DashboardScreen.KEYS_HELP,
    ]
    TITLE = "sgdwalk run"

    def __init__(self, source: LiveSource) -> None:
        super().__init__(facts_of(source.name, source.info, source.run.cfg.as_dict()))
        self.source = source
        self.outcome = ""  # the worker's end: a status, or "failed: message"

    def feed(self) -> None:
        self.add_records(self.source.drain())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """p and s only while the run trains (the footer shows just the keys that work)."""
        if action in ("pause", "stop"):
            return not (self.source.done.is_set() or self.source.stop_event.is_set())
        return True

    def training(self) -> bool:
        src = self.source
        return self.held_at is None and not (
            self.outcome or src.done.is_set() or src.stop_event.is_set()
        )

    def state_text(self) -> str:
        if self.outcome:
            return f"{STATE_MARKS.get(self.outcome.split(':')[0], '■')} {self.outcome}"
        if self.source.stop_event.is_set():
            return "■ stopping"
        if self.held_at is not None:  # the trainer said it holds
            return f"⏸ paused after step {self.held_at}" if self.source.paused else "▶ resuming"
        return "⏸ pausing" if self.source.paused else "▶ running"

    def action_pause(self) -> None:
        if self.source.done.is_set():
            return
        if self.source.paused:
            self.source.resume()
        else:
            self.source.pause()
        self.redraw({"status"})

    def action_stop(self) -> None:
        if not self.source.done.is_set():
            self.source.stop()
            self.refresh_bindings()
            self.redraw({"status"})

    def action_quit_dashboard(self) -> None:
        if self.source.done.is_set():
            self.app.exit()
            return
        text = ("This run trains inside the dashboard, so quitting stops it (saved as "
                "interrupted, everything committed). Start it with `sgdwalk run --detach` "
                "to leave a run going after you quit.")  # fmt: skip
        self.app.push_screen(QuitScreen(text, can_leave=False), self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice == "stop":
            self.app.exit_when_done = True  # type: ignore[attr-defined]
            self.source.stop()
            self.redraw({"status"})

    def worker_ended(self, status: str, error: BaseException | None) -> None:
        """The engine worker finished (``status``) or raised (``error``)."""
        self.tick()
        if error is not None:
            self.outcome = f"{FAILED}: {type(error).__name__}: {error}"
            where = self.source.writer.directory / "error.txt"
            self.log_event(f"✖ engine failed: {type(error).__name__}: {error} (traceback: {where})")
            self.app.notify(plain(f"training failed: {error}"), severity="error", timeout=10)
        else:
            self.outcome = status
        self.refresh_bindings()
        self.redraw({"status"})


class WatchScreen(DashboardScreen):
    """``sgdwalk watch``: follows a session that another process writes."""

    BINDINGS = [Binding("p", "pause", "pause/resume"), Binding("s", "stop", "stop run")]
    KEYS_HELP = [
        ("p", "pause / resume training (a trainer on this machine)"),
        ("s", "stop the trainer cleanly (a trainer on this machine)"),
        *DashboardScreen.KEYS_HELP,
    ]
    TITLE = "sgdwalk watch"

    def __init__(self, source: FollowSource) -> None:
        super().__init__(facts_of(source.name, source.info, source.session.config))
        self.source = source
        self._checked = 0.0
        self._liveness = ""
        self._resuming = False

    def feed(self) -> None:
        records = self.source.drain()
        if any(isinstance(r, EventLogged) and r.kind == RESUMED_EVENT for r in records):
            self._resuming = False
        self.add_records(records)
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            self._liveness = self._check_writer()
            self.buffers.phase = phase_text(self.source.phase) if self.source.writer_alive else ""
            self.buffers.dirty.add("status")
            if self.source.can_pause != self._keys_shown:
                self._keys_shown = self.source.can_pause
                self.refresh_bindings()

    _keys_shown = True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """p and s only for a live writer on this machine (the footer shows the keys that work)."""
        if action in ("pause", "stop"):
            return self.source.can_pause
        return True

    def _check_writer(self) -> str:
        try:
            return self._liveness_of(self.source)
        except SessionError as e:
            return f"✖ {e}"

    def _liveness_of(self, src: FollowSource) -> str:
        status = src.status
        if status != RUNNING:
            mark = STATE_MARKS.get(status, "■")
            dead = src.stored_status == RUNNING  # the writer never recorded an ending
            return f"{mark} {status}" + (" (writer stopped: no heartbeat)" if dead else "")
        age = src.heartbeat_age
        return f"● live, writer silent {age:.0f}s" if age > SILENT_AFTER else "● live"

    def training(self) -> bool:
        return self.held_at is None and self.source.writer_alive

    def state_text(self) -> str:
        """Paused only once the trainer says it holds (its ``paused`` event), not when asked."""
        if self.source.writer_alive:
            if self.held_at is not None:
                return "▶ resuming" if self._resuming else f"⏸ paused after step {self.held_at}"
            if self.source.paused:
                return "⏸ pausing"
        return self._liveness or "● following"

    def action_pause(self) -> None:
        src = self.source
        if not src.can_pause:
            self.set_note("cannot pause it from here: its trainer is not running on this machine")
            return
        held = src.paused or self.held_at is not None
        if src.resume() if held else src.pause():
            self._resuming = held
            self.buffers.dirty.add("status")
        else:
            self.set_note("the run is not running")

    def action_stop(self) -> None:
        if self.source.stop_writer():
            self.set_note("asked the run to stop")
        else:
            self.set_note("cannot stop it from here: its trainer is not running on this machine")

    def action_quit_dashboard(self) -> None:
        if not self.source.writer_alive:
            self.app.exit()
            return
        if self.source.owned:
            text = ("Quitting stops this run (saved as interrupted, everything committed). Start "
                    "it with `sgdwalk run --detach` to leave a run going after you quit.")  # fmt: skip
            self.app.push_screen(QuitScreen(text, can_leave=False), self._chosen)
            return
        text = (f"The run goes on in its own process; `sgdwalk watch {self.source.name}` "
                "reattaches later.")  # fmt: skip
        self.app.push_screen(
            QuitScreen(text, can_leave=True, can_stop=self.source.pid is not None), self._chosen
        )

    def _chosen(self, choice: str | None) -> None:
        if choice == "stop":
            self.source.stop_writer()
        if choice in ("stop", "leave"):
            self.source.stop()
            self.app.exit()

    def worker_ended(self, status: object, error: BaseException | None) -> None:
        self.tick()
        if error is not None:
            self.log_event(f"✖ reading the session failed: {type(error).__name__}: {error}")
        self._liveness = self._check_writer()
        self.redraw({"status"})


class ReplayScreen(DashboardScreen):
    """``sgdwalk replay``: a cursor over a saved session."""

    BINDINGS = [
        Binding("space", "play", "play/pause"),
        Binding("right,l", "step(1)", "step", key_display="→"),
        Binding("left,h", "step(-1)", "back", show=False),
        Binding("right_square_bracket", "epoch(1)", "epoch", key_display="]"),
        Binding("left_square_bracket", "epoch(-1)", "prev epoch", show=False),
        Binding("greater_than_sign,full_stop", "speed(1)", "faster", key_display=">"),
        Binding("less_than_sign,comma", "speed(-1)", "slower", show=False),
        Binding("colon", "seek", "go to", key_display=":"),
        Binding("home", "goto('start')", "start", show=False),
        Binding("end", "goto('end')", "end", show=False),
    ]
    KEYS_HELP = [
        ("space", "play / pause"),
        ("→ / ←  (l / h)", "one step forward / back"),
        ("] / [", "next / previous epoch"),
        ("> / <  (. / ,)", "faster / slower: 1x (as recorded) .. 1024x, then max"),
        (":", "go to a step (1234), an epoch (e3) or jump (+100 / -100)"),
        ("home / end", "first / last step"),
        *DashboardScreen.KEYS_HELP,
    ]
    TITLE = "sgdwalk replay"

    def __init__(self, cursor: ReplayCursor) -> None:
        facts = facts_of(cursor.name, cursor.info, cursor.session.config)
        facts.total_steps = cursor.bounds.last
        super().__init__(facts)
        self.cursor = cursor
        self._last_frame = time.monotonic()

    def on_mount(self) -> None:
        super().on_mount()
        self.seek(self.cursor.bounds.first)
        self._paced = self.set_interval(1 / REPLAY_FPS, self.play_frame, name="replay")
        self._fast = self.set_interval(1 / MAX_FPS, self.play_frame, name="replay-max", pause=True)
        if self.cursor.message:
            self.log_event(f"· session {self.cursor.status}: {self.cursor.message}")

    def damaged(self, e: SessionError) -> None:
        """A damaged row met while reading: say so, stop playing, keep what is shown."""
        self.cursor.playing = False
        self._sync_timers()
        self.set_note("damaged rows here: see the events")
        self.log_event(f"✖ {e}")

    def play_frame(self) -> None:
        now = time.monotonic()
        dt, self._last_frame = now - self._last_frame, now
        try:
            records = self.cursor.frame(dt)
        except SessionError as e:
            self.damaged(e)
            return
        if records:
            self.add_records(records)
            self.redraw(self.buffers.take_dirty() | {"status"})
        elif not self.cursor.playing:
            self._fast.pause()

    def seek(self, step: int) -> None:
        """Jump: the slices and the status line repaint at once; the context panels take their
        data now and repaint on the next timer tick, so a seek shows the new step fast."""
        had_curvature = bool(self.buffers.curvature)
        try:
            self.cursor.seek(step, self.buffers)
        except SessionError as e:
            self.damaged(e)
            return
        if bool(self.buffers.curvature) != had_curvature:
            self.apply_layout()  # a layout pass repaints every panel: only when it changes
        context = [self.chart(name) for name in PANELS if name != "slices"]
        for chart in context:
            chart.defer()
        self.redraw(self.buffers.take_dirty() | {"status", "events"})
        self._deferred = context

    _deferred: list = []

    def tick(self) -> None:
        for chart in self._deferred:
            chart.resume()
        self._deferred = []
        super().tick()

    def state_text(self) -> str:
        mark = "▶" if self.cursor.playing else "⏸"
        return f"{mark} {self.cursor.speed_label()}"

    def status_text(self) -> str:
        c, b = self.cursor, self.buffers
        n_epochs = self.buffers.facts.epochs
        fields = [
            self.state_text(),
            *self.notes(),
            f"step {c.cursor}/{c.bounds.last}",
            f"epoch {c.epoch}/{n_epochs}" if n_epochs else f"epoch {c.epoch}",
            f"{b.barriers} barriers",
        ]
        if b.last is not None:
            fields += [f"lr {b.last.lr:g}", f"batch {b.last.batch_size}"]
        fields += [b.facts.device, b.facts.session, f"[{c.status}]"]
        return join([f for f in fields if f], self.size.width)

    def action_play(self) -> None:
        self.cursor.toggle()
        self._last_frame = time.monotonic()
        self._sync_timers()
        self.redraw({"status"})

    def _sync_timers(self) -> None:
        if self.cursor.playing and self.cursor.speed == MAX_SPEED:
            self._fast.resume()
        else:
            self._fast.pause()

    def action_step(self, delta: int) -> None:
        self.cursor.playing = False
        self._sync_timers()
        self.seek(self.cursor.cursor + delta)

    def action_epoch(self, delta: int) -> None:
        c = self.cursor
        start = c.epoch_start(c.epoch)
        target = c.epoch + delta
        if delta < 0 and start is not None and c.cursor > start:
            target = c.epoch  # first back to the start of this epoch
        step = c.epoch_start(target)
        if step is None:
            step = c.bounds.last if delta > 0 else c.bounds.first
        self.seek(step)

    def action_speed(self, delta: int) -> None:
        (self.cursor.faster if delta > 0 else self.cursor.slower)()
        self._sync_timers()
        self.redraw({"status"})

    def action_goto(self, where: str) -> None:
        self.seek(self.cursor.bounds.first if where == "start" else self.cursor.bounds.last)

    def action_seek(self) -> None:
        self.app.push_screen(SeekScreen(), self._seek_to)

    def _seek_to(self, text: str | None) -> None:
        if not text:
            return
        try:
            step = parse_target(text, self.cursor)
        except ValueError as e:
            self.set_note(str(e))
            return
        self.note = ""
        self.seek(step)

    def worker_ended(self, status: object, error: BaseException | None) -> None:
        """Replay has no worker."""

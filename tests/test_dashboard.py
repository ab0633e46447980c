"""The live dashboard, fed by canned records through the real worker, writer and session.

A ``CannedRun`` stands in for ``engine.train.Run`` (same ``records(should_stop)`` / ``status`` /
``cfg`` surface), so these tests exercise the worker, the queue, the buffers, the charts and the
keys without torch or training.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from canned import CANNED_CONFIG, CANNED_INFO, aio, canned_records, drawn, screen_text, until
from textual.worker import Worker, WorkerState

from sgdwalk.records import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    PAUSED_EVENT,
    RESUMED_EVENT,
    RUNNING,
    EpochEnded,
    StepMeasured,
)
from sgdwalk.session import SessionWriter, open_session
from sgdwalk.tui.dashboard.app import make_app
from sgdwalk.tui.dashboard.buffers import TRAIL, Buffers
from sgdwalk.tui.dashboard.dialogs import QuitScreen
from sgdwalk.tui.dashboard.sources import RunSource

STEPS = 96


class _Cfg:
    def as_dict(self) -> dict:
        return dict(CANNED_CONFIG)


class CannedRun:
    """The engine's Run surface over canned records; can hold at a gate or raise mid-run."""

    def __init__(self, gate_after: int | None = None, fail_after: int | None = None) -> None:
        self.cfg = _Cfg()
        self.status = RUNNING
        self.gate = threading.Event()
        self.gate_after, self.fail_after = gate_after, fail_after
        self.yielded = 0

    def records(self, should_stop):
        for rec in canned_records():
            if isinstance(rec, StepMeasured) and should_stop():
                self.status = INTERRUPTED
                return
            if self.yielded == self.gate_after:
                self.gate.wait(10)
            if self.yielded == self.fail_after:
                raise RuntimeError("canned engine broke")
            self.yielded += 1
            yield rec
        self.status = FINISHED


def live_app(tmp_path: Path, **kw):
    run = CannedRun(**kw)
    writer = SessionWriter(tmp_path / "live", CANNED_CONFIG, CANNED_INFO)
    source = RunSource(run, writer, "live", CANNED_INFO)
    return make_app(source), source, run


@asynccontextmanager
async def finished_app(tmp_path: Path, size: tuple[int, int]):
    """The live app over the whole canned run, every record taken and drawn."""
    app, source, _ = live_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        yield app, pilot


@aio
async def test_charts_hold_the_canned_run(tmp_path):
    async with finished_app(tmp_path, (120, 40)) as (app, pilot):
        scr = app.dashboard
        slices = scr.chart("slices")
        assert [s.step for s in slices.data.steps] == list(range(STEPS - 19, STEPS + 1))
        barriers = scr.chart("barriers")
        assert [e.epoch for e in barriers.data.epochs] == [1, 2, 3, 4]
        total = sum(e.barriers for e in barriers.data.epochs)
        assert total == STEPS // 7 and f"barriers · {total} total" in barriers.border_title
        assert len(scr.chart("alignment").data.curvature) == 4  # the latest four of five
        assert "5 measurements" in scr.chart("alignment").border_title
        assert [s.step for s in scr.chart("cosine").data.steps] == list(range(1, STEPS + 1))
        loss = scr.chart("loss")
        assert len(loss.data.steps) == STEPS and len(loss.data.epochs) == 4
        status = scr.query_one("#status").text
        for part in ("finished", f"step {STEPS}/{STEPS}", "epoch 4/4", "lr 0.1", "cpu", "live"):
            assert part in status
        assert any("finished 96 steps" in line for line in scr.query_one("#events").lines_shown)
    assert open_session(tmp_path / "live").status == FINISHED


@aio
async def test_window_keys_widen_and_narrow_the_slices(tmp_path):
    app, source, _ = live_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, source.done.is_set)
        await pilot.press("plus")
        await pilot.pause()
        assert len(app.dashboard.chart("slices").data.steps) == 40
        await pilot.press("minus", "minus")
        await pilot.pause()
        assert len(app.dashboard.chart("slices").data.steps) == 10


@aio
async def test_pause_holds_training_and_resume_finishes(tmp_path):
    app, source, run = live_app(tmp_path, gate_after=10)
    async with app.run_test(size=(120, 40)) as pilot:
        status = app.dashboard.query_one("#status")
        await until(pilot, lambda: run.yielded == 10)
        await pilot.press("p")  # the engine is inside a step (held at the gate): not paused yet
        assert source.paused and "⏸ pausing" in status.text
        run.gate.set()
        await until(pilot, lambda: "⏸ paused after step" in status.text)
        held = run.yielded
        assert held == 11  # the record in flight landed, then the generator waits
        session = open_session(tmp_path / "live")
        (event,) = [e for e in session.events() if e.kind == PAUSED_EVENT]
        assert f"paused after step {event.step} " in status.text
        assert "-- steps/s" in status.text and "ETA" not in status.text  # no rate while held
        assert event.step == session.last_step()  # every step before the pause is committed
        await drawn(pilot, app)
        assert run.yielded == held
        await pilot.press("p")
        await until(pilot, source.done.is_set)
    session = open_session(tmp_path / "live")
    assert session.status == FINISHED
    assert [e.kind for e in session.events() if e.kind in (PAUSED_EVENT, RESUMED_EVENT)] == [
        PAUSED_EVENT,
        RESUMED_EVENT,
    ]


@aio
async def test_stop_key_ends_the_run_as_interrupted(tmp_path):
    app, source, run = live_app(tmp_path, gate_after=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: run.yielded == 30)
        await pilot.press("s")
        run.gate.set()
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        assert INTERRUPTED in app.dashboard.query_one("#status").text
    session = open_session(tmp_path / "live")
    assert session.status == INTERRUPTED
    assert session.last_step() < STEPS


@aio
async def test_quit_while_training_asks_then_stops_cleanly(tmp_path):
    app, source, run = live_app(tmp_path, gate_after=20)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: run.yielded == 20)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        assert not app.screen.can_leave  # no --detach: quitting stops the run
        await pilot.press("escape")
        assert not isinstance(app.screen, QuitScreen)
        await pilot.press("q", "s")
        run.gate.set()
        await until(pilot, source.done.is_set)
    assert open_session(tmp_path / "live").status == INTERRUPTED


@aio
async def test_engine_error_shows_in_the_dashboard_and_fails_the_session(tmp_path):
    app, source, _ = live_app(tmp_path, fail_after=40)
    seen: list[WorkerState] = []

    def hook(message) -> None:
        if isinstance(message, Worker.StateChanged) and message.worker.name == "engine":
            seen.append(message.state)

    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        await until(pilot, lambda: WorkerState.ERROR in seen)
        await pilot.pause()
        scr = app.dashboard
        assert "canned engine broke" in scr.query_one("#status").text
        assert any("engine failed" in line for line in scr.query_one("#events").lines_shown)
        assert app.is_running  # the terminal stays usable
    assert isinstance(app.engine_error, RuntimeError)
    session = open_session(tmp_path / "live")
    assert session.status == FAILED and "canned engine broke" in session.message
    assert (tmp_path / "live" / "error.txt").is_file()


@aio
async def test_redraws_are_throttled_however_fast_records_come(tmp_path, monkeypatch):
    from sgdwalk.tui.dashboard import screen, widgets

    draws, ticks = [], []
    show, tick = widgets.FigureChart.show, screen.DashboardScreen.tick

    def counted_show(chart, data, title):
        if chart.figure.name == "slices" and data != chart.data:
            draws.append(1)
        show(chart, data, title)

    monkeypatch.setattr(widgets.FigureChart, "show", counted_show)
    monkeypatch.setattr(screen.DashboardScreen, "tick", lambda s: (ticks.append(1), tick(s)))
    async with finished_app(tmp_path, (120, 40)):
        pass
    # 96 steps arrive within a few timer ticks (more on a loaded machine): at most one redraw a
    # tick, plus the first paint, never one per step
    assert len(draws) <= len(ticks) + 1 and len(draws) < STEPS // 4


@pytest.mark.parametrize(("size", "shown", "hidden"), [
    ((120, 40), {"slices", "barriers", "loss", "cosine", "alignment"}, set()),
    ((80, 24), {"slices", "barriers", "loss"}, {"cosine", "alignment"}),
])  # fmt: skip
@aio
async def test_layout_follows_the_terminal(tmp_path, size, shown, hidden):
    async with finished_app(tmp_path, size) as (app, pilot):
        scr = app.dashboard
        assert {n for n in shown | hidden if scr.chart(n).display} == shown


@aio
async def test_too_small_then_resize_back(tmp_path):
    app, source, _ = live_app(tmp_path)
    async with app.run_test(size=(60, 18)) as pilot:
        await pilot.pause()
        scr = app.dashboard
        assert scr.has_class("-tiny")
        assert "terminal too small" in str(scr.query_one("#too-small").render())
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not scr.has_class("-tiny")
        await pilot.resize_terminal(130, 45)
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        assert scr.wide and scr.chart("cosine").display


@aio
async def test_tab_moves_focus_and_brings_the_panel_into_the_compact_slot(tmp_path):
    async with finished_app(tmp_path, (80, 24)) as (app, pilot):
        order = []
        for _ in range(9):
            await pilot.press("tab")
            await pilot.pause()
            order.append(app.focused.id)
        assert order == ["barriers", "loss", "cosine", "alignment", "sharpness", "decomposition",
                         "layers", "density", "slices"]  # fmt: skip
        await pilot.press("shift+tab", "shift+tab", "shift+tab", "shift+tab")
        await pilot.pause()
        assert app.focused.id == "sharpness" and app.dashboard.chart("sharpness").display
        assert not app.dashboard.chart("loss").display
        assert not app.dashboard.chart("alignment").display


@aio
async def test_help_screen_lists_every_key(tmp_path):
    app, source, _ = live_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("Static").render())
        for key in ("p", "s", "q", "+ / -", "tab", "slices", "barriers", "cosine"):
            assert key in text
        await pilot.press("escape")
        await until(pilot, source.done.is_set)


def test_buffers_stay_bounded_over_a_long_run():
    b = Buffers()
    for i in range(1, 20_001):
        b.add(StepMeasured(step=i, epoch=1 + i // 1000, lr=0.1, batch_size=64, batch_loss=1.0,
                           elapsed=i * 0.01, slice=[1.0, 0.5, 1.0], alphas=[0, 0.5, 1],
                           barrier=False))  # fmt: skip
        if i % 1000 == 0:
            b.add(EpochEnded(i // 1000, i, 1.0, 0.5, 1.0, 0.5, 0, 0.0))
    assert len(b.trail) == TRAIL and len(b.measured) <= 200
    assert b.steps_per_second() == pytest.approx(100.0)


@aio
async def test_a_tick_repaints_the_slices_first_then_the_longest_waiting_charts(tmp_path):
    from sgdwalk.tui.dashboard.view import CHARTS_PER_TICK, PANELS

    async with finished_app(tmp_path, (120, 40)) as (app, pilot):
        scr = app.dashboard
        shown = [n for n in PANELS if scr.chart(n).display]
        assert len(shown) > CHARTS_PER_TICK + 1
        scr.repaints.drawn_at.update({n: float(i) for i, n in enumerate(reversed(shown))})
        scr.redraw(set(shown), charts=CHARTS_PER_TICK)  # the slices were drawn longest ago
        oldest_other = [n for n in reversed(shown) if n != "slices"][: CHARTS_PER_TICK - 1]
        # hidden panels (sharpness behind alignment) stay pending until shown
        assert scr.repaints.pending & set(shown) == set(shown) - {"slices", *oldest_other}
        scr.redraw(set(), charts=None)  # a key's redraw is not rationed
        # drawn when brought in
        assert scr.repaints.pending == {"sharpness", "decomposition", "layers", "density"}


@aio
async def test_a_new_title_reuses_the_figure_new_data_rebuilds_it(tmp_path):
    async with finished_app(tmp_path, (120, 40)) as (app, pilot):
        from sgdwalk.tui.figures import FigureData

        chart = app.dashboard.chart("barriers")
        chart.render()  # the figure of the data shown, built (the screen may not have painted yet)
        builds = []
        build = chart.plt.build
        chart.plt.build = lambda: (builds.append(1), build())[1]
        same = FigureData(chart.data.name, config=dict(chart.data.config),
                          epochs=list(chart.data.epochs), info=dict(chart.data.info))  # fmt: skip
        chart.show(same, "barriers · new title")  # title only
        await pilot.pause()
        chart.render()  # a re-render (new title, focus, layout) reuses the cached figure
        assert chart.border_title == "barriers · new title"
        assert builds == []
        chart.show(FigureData(same.name, epochs=same.epochs[:-1]), "barriers · less")
        await until(pilot, lambda: builds == [1])


@pytest.mark.slow
@aio
async def test_sharpness_and_the_decomposition_share_the_curvature_slot(tmp_path):
    """A run with curvature passes and ``--decompose``, replayed: wide, the fifth slot holds
    alignment, then (focus moving on) sharpness with its 2/η title, then the decomposition."""
    from canned import run_cli

    from sgdwalk.tui.dashboard.replay import ReplaySource

    code, _, err = run_cli("run", "--headless", "--epochs", "4", "--train-size", "256",
                           "--hessian-every", "4s", "--top-k", "2", "--decompose",
                           "--sessions-dir", str(tmp_path), "--session", "d")  # fmt: skip
    assert code == 0, err
    app = make_app(ReplaySource(open_session(tmp_path / "d")))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("end")
        await drawn(pilot, app)
        scr = app.dashboard
        curve = ["alignment", "sharpness", "decomposition"]
        assert [scr.chart(n).display for n in curve] == [True, False, False]
        seen = []
        for _ in range(7):
            await pilot.press("tab")
            await drawn(pilot, app)
            name = scr.focused.id
            seen.append(name)
            if name in curve:  # brought into the slot, the other two out of it
                assert [scr.chart(n).display for n in curve] == [n == name for n in curve]
                chart = scr.chart(name)
                assert chart.error is None and chart.figure.has_data(chart.data)
        assert seen == ["barriers", "loss", "cosine", *curve, "slices"]
        assert "sharpness · λ1 at " in scr.chart("sharpness").border_title
        assert " of 2/η" in scr.chart("sharpness").border_title
        assert len(scr.chart("sharpness").data.curvature) == 5  # every pass: steps 0, 4, .., 16
        await pilot.press("shift+tab", "z")  # the whole screen, as drawn: the decomposition zoomed
        await drawn(pilot, app)
        screen = screen_text(app)
        assert "dominant part" in screen and "bulk part" in screen


def test_the_status_line_leaves_out_whole_fields_that_do_not_fit():
    """Never cut in the middle of a number: a field that does not fit is left out whole."""
    from sgdwalk.tui.dashboard.status import join

    fields = ["▶ running", "step 1234/5000", "epoch 3/10", "12.5 steps/s", "ETA 1:02:03",
              "lr 0.5", "batch 64", "cpu", "digits-mlp-20261201-000743"]  # fmt: skip
    line = join(fields, 120)
    assert line.startswith("▶ running · step 1234/5000") and len(line) <= 118
    for narrow in (30, 50, 80):
        got = join(fields, narrow)
        assert len(got) <= narrow - 2
        kept = [f for f in fields if f in got]
        assert got == " ".join(kept)  # whole fields only, in their order
    assert join(["a" * 50], 20) == "a" * 17 + "…"


@aio
async def test_the_latest_warning_stays_in_view_after_newer_events():
    from textual.app import App

    from sgdwalk.tui.dashboard.widgets import EventLog

    class Log(App[None]):
        def compose(self):
            yield EventLog()

    app = Log()
    async with app.run_test(size=(100, 30)) as pilot:
        log = app.query_one(EventLog)
        log.styles.height = 4
        await pilot.pause()
        warning = "! step 0 epoch 0: warning: vgg11 is built for 32x32 inputs or larger"
        log.show([warning])
        assert log.border_title == ""  # in view: said once
        log.show([warning, *(f"· step {i}: curvature pass, λ1 2.5" for i in range(6))])
        assert log.border_title == warning

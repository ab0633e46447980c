"""A first run on a shared machine: threads chosen by what is free, a dashboard that never looks
dead (phases and honest rates), keys that do what they say, Ctrl+C through the quit question."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from canned import (
    CANNED_CONFIG,
    CANNED_INFO,
    HANG,
    aio,
    drawn,
    run_cli,
    until,
    write_canned_session,
)
from test_dashboard import live_app

from sgdwalk import cpu
from sgdwalk.errors import SessionError
from sgdwalk.records import (
    FINISHED,
    INTERRUPTED,
    PAUSED_EVENT,
    CurvatureMeasured,
    StepMeasured,
)
from sgdwalk.session import SessionWriter, open_session
from sgdwalk.tui.dashboard.buffers import Buffers, RunFacts
from sgdwalk.tui.dashboard.dialogs import HelpScreen, QuitScreen
from sgdwalk.tui.dashboard.status import run_fields
from sgdwalk.values import Schedule

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))


# ---------------------------------------------------------------- threads


@pytest.mark.parametrize("cores, others, threads", [(2, 0, 2), (2, 1, 1), (2, 5, 1), (16, 3, 13)])
def test_threads_are_the_free_cores(monkeypatch, cores, others, threads):
    monkeypatch.setattr(cpu, "usable_cores", lambda: cores)
    monkeypatch.setattr(cpu, "others_running", lambda: others)
    assert cpu.choose_threads(None) == (threads, f"{threads} of {cores} cores free")
    assert cpu.choose_threads(3) == (3, "--threads")


def test_the_running_count_is_read():
    assert 0 <= cpu.others_running() < 10_000


# ---------------------------------------------------------------- never looks dead


def _step(step: int, elapsed: float) -> StepMeasured:
    return StepMeasured(step, 1, 0.1, 64, 1.0, elapsed)


def test_the_rate_leaves_out_curvature_passes_and_the_eta_counts_them():
    b = Buffers(facts=RunFacts(total_steps=200, steps_per_epoch=10, epochs=20,
                               hessian_every=Schedule(1, "epochs")))  # fmt: skip
    for t in range(1, 11):
        b.add(_step(t, 0.1 * t))  # 10 steps/s
    b.add(CurvatureMeasured(10, 1, [1.0], [0.0], 30, [], elapsed=6.0, seconds=5.0))
    for t in range(11, 21):
        b.add(_step(t, 6.0 + 0.1 * (t - 10)))
    assert b.steps_per_second() == pytest.approx(10.0)
    assert b.facts.passes_after(20) == 18
    fields = run_fields(b, 200)
    (eta,) = [f for f in fields if f.startswith("ETA")]
    assert eta == "ETA 1:48 incl. 18 curvature"  # 18 s of steps + 18 passes of 5 s


@aio
async def test_watch_shows_the_phase_the_writer_is_in(tmp_path):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import WatchSource

    w = SessionWriter(tmp_path / "p", CANNED_CONFIG, CANNED_INFO)
    try:
        w.write(_step(1, 0.1))
        w.commit()
        with sqlite3.connect(tmp_path / "p" / "session.sqlite") as con:  # as the heartbeat does
            phase = {"phase": "curvature", "done": 12, "total": 63, "since": time.time() - 41}
            con.execute("UPDATE meta SET value = ? WHERE key = 'phase'", (json.dumps(phase),))
        source = WatchSource(open_session(tmp_path / "p"))
        app = make_app(source)
        async with app.run_test(size=(120, 40)) as pilot:
            status = app.dashboard.query_one("#status")
            await until(pilot, lambda: "curvature 12/63 · 4" in status.text)
            assert "● live" in status.text
            source.stop()
    finally:
        w.close(FINISHED)


def test_the_writer_stamps_the_phase_with_its_heartbeat(tmp_path):
    from sgdwalk.records import PhaseProgressed

    w = SessionWriter(tmp_path / "h", {}, {})
    try:
        w.write(PhaseProgressed(0, 0, "curvature", 5, 40))
        with open_session(tmp_path / "h") as s:
            deadline = time.monotonic() + HANG
            while s.phase is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert s.phase["done"] == 5 and s.phase["total"] == 40
            w.write(_step(1, 0.1))  # a step ends the phase
            w.commit()
            while s.phase is not None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        w.close(FINISHED)


def test_replay_at_recorded_pace_jumps_over_curvature_passes(tmp_path):
    from sgdwalk.tui.dashboard.replay import ReplaySource

    w = SessionWriter(tmp_path / "r", CANNED_CONFIG, CANNED_INFO)
    for t in range(1, 6):
        w.write(_step(t, 0.1 * t))
    w.write(CurvatureMeasured(5, 1, [1.0], [0.0], 30, [], elapsed=100.5, seconds=100.0))
    for t in range(6, 11):
        w.write(_step(t, 100.5 + 0.1 * (t - 5)))
    w.close(FINISHED)
    cursor = ReplaySource(open_session(tmp_path / "r"))
    cursor.seek(5)
    cursor.playing = True
    got = cursor.frame(0.15)  # 1x: 0.15 s of training time, the 100 s pass skipped
    assert [r.step for r in got if isinstance(r, StepMeasured)] == [6]
    assert any(isinstance(r, CurvatureMeasured) for r in got) is False  # the pass was at step 5


def test_a_curvature_pass_is_an_event_with_its_length():
    from sgdwalk.tui.lines import curvature_line

    line = curvature_line(CurvatureMeasured(24, 1, [2.5], [0.0], 64, [], elapsed=9.0, seconds=92.3))
    assert line.startswith("step 24: curvature pass, λ1 2.5 (64 products, 92 s)")


# ---------------------------------------------------------------- keys


@aio
async def test_ctrl_c_and_ctrl_q_ask_what_quitting_means(tmp_path):
    app, source, run = live_app(tmp_path, gate_after=20)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: run.yielded == 20)
        for key in ("ctrl+c", "ctrl+q"):
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, QuitScreen))
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, QuitScreen))
        assert app.is_running and not source.stop_event.is_set()
        await pilot.press("question_mark")  # from the help page too: it closes, then asks
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("ctrl+c")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard)
        await pilot.press("ctrl+c", "s")
        run.gate.set()
        await until(pilot, source.done.is_set)
    assert open_session(tmp_path / "live").status == INTERRUPTED


@aio
async def test_after_stop_the_footer_offers_no_p_or_s_and_the_rate_is_gone(tmp_path):
    app, source, run = live_app(tmp_path, gate_after=30)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: run.yielded == 30)
        scr = app.dashboard
        assert scr.check_action("pause", ()) and scr.check_action("stop", ())
        await pilot.press("s")
        run.gate.set()
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        assert not scr.check_action("pause", ()) and not scr.check_action("stop", ())
        shown = {key for key, b in app.screen.active_bindings.items() if b.binding.show}
        assert "p" not in shown and "s" not in shown and "q" in shown
        status = scr.query_one("#status").text
        assert "-- steps/s" in status and "ETA" not in status


@pytest.mark.slow
@aio
async def test_watch_of_a_run_on_this_machine_can_pause_and_stop_it(tmp_path):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import WatchSource

    argv = [SGDWALK, "run", "--headless", "--epochs", "200", "--hessian-every", "off",
            "--sessions-dir", str(tmp_path), "--session", "w"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + HANG
        while True:
            assert time.monotonic() < deadline and proc.poll() is None
            try:
                session = open_session(tmp_path / "w")
                if session.step_count() > 3:
                    break
                session.close()
            except SessionError:
                pass  # not there yet
            time.sleep(0.1)
        source = WatchSource(session)  # reattached: this dashboard did not start the run
        assert source.pid == proc.pid and source.can_pause
        app = make_app(source)
        async with app.run_test(size=(120, 40)) as pilot:
            scr = app.dashboard
            assert scr.check_action("pause", ()) and scr.check_action("stop", ())
            await pilot.press("p")
            await until(pilot, lambda: scr.held_at is not None)
            assert "⏸ paused after step" in scr.query_one("#status").text
            await pilot.press("s")
            await until(pilot, source.done.is_set)
        assert proc.wait(HANG) == 130
        with open_session(tmp_path / "w") as s:
            assert s.status == INTERRUPTED
            assert PAUSED_EVENT in [e.kind for e in s.events()]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@aio
async def test_watch_of_a_finished_run_offers_no_p_or_s(canned_session):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import WatchSource

    source = WatchSource(open_session(canned_session))
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, source.done.is_set)
        assert not app.dashboard.check_action("pause", ())
        assert not app.dashboard.check_action("stop", ())


# ---------------------------------------------------------------- small things


def test_vgg11_on_small_inputs_says_what_it_measures():
    from sgdwalk.models import fit_notes

    (note,) = fit_notes("vgg11", (1, 8, 8))
    assert "keeps 3 of its 5 poolings" in note
    assert fit_notes("vgg11", (3, 32, 32)) == [] and fit_notes("mlp", (1, 8, 8)) == []


def test_ls_json_gives_numbers(tmp_path):
    write_canned_session(tmp_path / "a")
    code, out, _ = run_cli("ls", "--json", "--sessions-dir", str(tmp_path))
    (row,) = json.loads(out)
    assert code == 0 and row["batch_size"] == 64 and row["lr"] == 0.1 and row["steps"] == 96


def test_open_session_by_name_uses_the_default_sessions_folder(tmp_path, monkeypatch):
    write_canned_session(tmp_path / "elsewhere" / "mine")
    monkeypatch.setenv("SGDWALK_SESSIONS", str(tmp_path / "elsewhere"))
    with open_session("mine") as s:
        assert s.step_count() == 96
    monkeypatch.delenv("SGDWALK_SESSIONS")
    monkeypatch.chdir(tmp_path / "elsewhere" / "..")
    (tmp_path / "sessions").symlink_to(tmp_path / "elsewhere")
    with open_session("mine") as s:
        assert s.step_count() == 96

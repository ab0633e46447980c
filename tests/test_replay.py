"""Replay: seeking and playing a saved session, on every kind of ending."""

from __future__ import annotations

from pathlib import Path

import pytest
from canned import aio, until, write_canned_session, write_then_die

from sgdwalk.records import DIVERGED, FAILED, INTERRUPTED
from sgdwalk.session import open_session
from sgdwalk.tui.dashboard.app import make_app
from sgdwalk.tui.dashboard.buffers import Buffers
from sgdwalk.tui.dashboard.dialogs import SeekScreen
from sgdwalk.tui.dashboard.replay import ReplaySource, parse_target

BARRIER_STEPS = [s for s in range(1, 97) if s % 7 == 0]


def replay_app(path: Path):
    return make_app(ReplaySource(open_session(path)))


def status(app) -> str:
    return app.dashboard.query_one("#status").text


def test_seek_rebuilds_every_panel_from_indexed_reads(canned_session):
    cursor = ReplaySource(open_session(canned_session))
    b = Buffers()
    b.load(cursor.seek(50))
    assert b.last.step == 50 and cursor.epoch == 3
    assert [s.step for s in b.trail] == list(range(1, 51))
    assert [e.epoch for e in b.epochs] == [1, 2]
    assert len(b.curvature) == 3  # at step 0, end of epoch 1, end of epoch 2
    assert b.epoch_barriers == sum(1 for s in BARRIER_STEPS if 49 <= s <= 50)
    assert b.barriers == sum(1 for s in BARRIER_STEPS if s <= 50)
    b.load(cursor.seek(10_000))
    assert cursor.cursor == 96 and b.barriers == len(BARRIER_STEPS)


def test_parse_target(canned_session):
    cursor = ReplaySource(open_session(canned_session))
    cursor.cursor = 30
    assert parse_target("40", cursor) == 40
    assert parse_target("e3", cursor) == 49
    assert parse_target("epoch 2", cursor) == 25
    assert parse_target("+10", cursor) == 40
    assert parse_target("-100", cursor) == 1
    for bad in ("", "e9", "x", "e"):
        with pytest.raises(ValueError):
            parse_target(bad, cursor)


@aio
async def test_keys_step_and_jump_epochs(canned_session):
    app = replay_app(canned_session)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "step 1/96" in status(app)
        await pilot.press("right", "right", "right")
        assert "step 4/96" in status(app)
        await pilot.press("left")
        assert "step 3/96" in status(app)
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert "step 49/96" in status(app) and "epoch 3/4" in status(app)
        assert [e.epoch for e in app.dashboard.chart("barriers").data.epochs] == [1, 2]
        await pilot.press("left_square_bracket")
        assert "step 25/96" in status(app)
        await pilot.press("end")
        assert "step 96/96" in status(app)
        assert app.dashboard.chart("slices").data.steps[-1].step == 96
        await pilot.press("home")
        assert "step 1/96" in status(app)


@aio
async def test_colon_prompt_jumps_to_a_step_or_an_epoch(canned_session):
    app = replay_app(canned_session)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("colon")
        await pilot.pause()
        assert isinstance(app.screen, SeekScreen)
        await pilot.press(*"e4", "enter")
        await pilot.pause()
        assert "step 73/96" in status(app)
        await pilot.press("colon", *"60", "enter")
        await pilot.pause()
        assert "step 60/96" in status(app)
        assert app.dashboard.chart("slices").data.steps[-1].step == 60
        await pilot.press("colon", *"e9", "enter")
        await pilot.pause()
        assert "epoch 9 is not in this session" in status(app)


@aio
async def test_play_at_max_speed_draws_to_the_end_and_stops(canned_session):
    app = replay_app(canned_session)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        for _ in range(11):
            await pilot.press("greater_than_sign")
        assert "max" in status(app)
        await pilot.press("space")
        cursor = app.dashboard.source
        for _ in range(200):
            if cursor.at_end:
                break
            await pilot.pause(0.05)
        await pilot.pause()
        assert cursor.at_end and not cursor.playing
        assert "step 96/96" in status(app)
        assert app.dashboard.buffers.barriers == len(BARRIER_STEPS)
        assert f"{len(BARRIER_STEPS)} total" in app.dashboard.chart("barriers").border_title


@aio
async def test_play_at_recorded_pace_then_pause(canned_session):
    app = replay_app(canned_session)
    async with app.run_test(size=(80, 24)) as pilot:
        cursor = app.dashboard.source
        await pilot.press("space")
        await until(pilot, lambda: cursor.cursor > 3)  # 1x: the canned run took 0.05 s a step
        await pilot.press("space")
        reached = cursor.cursor
        assert reached < 96 and not cursor.playing
        app.dashboard._last_frame -= 10.0  # ten seconds later, a frame while paused
        app.dashboard.play_frame()
        assert cursor.cursor == reached


@pytest.mark.parametrize("ending", [INTERRUPTED, DIVERGED, FAILED])
@aio
async def test_replay_opens_sessions_that_did_not_finish(tmp_path, ending):
    path = write_canned_session(tmp_path / ending, status=ending, epochs=2)
    app = replay_app(path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("end")
        assert "step 48/48" in status(app) and f"[{ending}]" in status(app)


def test_replay_opens_a_session_whose_writer_was_killed(tmp_path):
    write_then_die(tmp_path / "killed")
    cursor = ReplaySource(open_session(tmp_path / "killed"))
    assert cursor.status == INTERRUPTED and cursor.bounds.last == 24

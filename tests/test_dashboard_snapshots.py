"""Snapshots of the dashboard at 80x24 (compact) and 120x40 (every panel), over the canned session.

Replay draws the same screen as a live run from deterministic data (no clocks or rates), so its
pictures are stable. Update them with ``pytest --snapshot-update`` after a deliberate change.
The alignment batch sizes are 100 and 1000 here: with 1000 and 1500 side by side on a log axis,
plotext drops one of the two colliding tick labels, and which one varies between runs.
"""

from __future__ import annotations

import dataclasses

import pytest
from canned import CANNED_CONFIG, CANNED_INFO, aio, canned_records, drawn, screen_text

from sgdwalk.records import FINISHED, CurvatureMeasured
from sgdwalk.session import SessionWriter, open_session
from sgdwalk.tui.dashboard.app import make_app
from sgdwalk.tui.dashboard.replay import ReplaySource


@pytest.fixture
def snap_session(tmp_path):
    writer = SessionWriter(tmp_path / "canned", CANNED_CONFIG, CANNED_INFO)
    for rec in canned_records():
        if isinstance(rec, CurvatureMeasured):
            rec = dataclasses.replace(rec, alignment=rec.alignment[:2])
        writer.write(rec)
    writer.close(FINISHED)
    return tmp_path / "canned"


def replay(path):
    return make_app(ReplaySource(open_session(path)))


async def _end_then_tick(pilot):
    """A seek repaints slices and status at once and the other panels on the next timer tick."""
    await pilot.press("end")
    await drawn(pilot, pilot.app)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_dashboard_at_the_end_of_the_canned_run(snap_compare, snap_session, size):
    assert snap_compare(replay(snap_session), run_before=_end_then_tick, terminal_size=size)


def test_dashboard_mid_run_with_cosines_in_the_compact_slot(snap_compare, snap_session):
    keys = ["right_square_bracket", "right_square_bracket", "tab", "tab", "tab"]
    assert snap_compare(replay(snap_session), press=keys, terminal_size=(80, 24))


def test_terminal_too_small(snap_compare, snap_session):
    assert snap_compare(replay(snap_session), terminal_size=(60, 20))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_the_help_page(snap_compare, snap_session, size):
    assert snap_compare(replay(snap_session), press=["question_mark"], terminal_size=size)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_the_help_page_shows_its_text_on_screen(snap_session, size):
    """The page as the terminal shows it (an empty frame once passed a test of its widget)."""
    app = replay(snap_session)
    async with app.run_test(size=size) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        shown = screen_text(app)
    assert "sgdwalk replay — keys" in shown
    assert "play / pause" in shown and "escape or ? closes this page" in shown or size[1] < 40
    assert "Panels" in shown

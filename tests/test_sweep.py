"""A sweep's grid, its points' names, and taking a stopped sweep up again."""

from __future__ import annotations

import pytest
from canned import write_canned_session

from sgdwalk.errors import ConfigError, SessionError
from sgdwalk.sweep import grid, plan, points, to_run


def test_the_grid_is_every_combination_in_the_order_given():
    swept, shared = grid({"lr": "0.1,0.5", "batch_size": "32, 128", "epochs": 3,
                          "align_batch_sizes": "100,full", "model": None})  # fmt: skip
    assert swept == {"lr": ["0.1", "0.5"], "batch_size": ["32", "128"]}
    assert shared == {"epochs": 3, "align_batch_sizes": "100,full"}
    names = [p.name for p in points(swept)]
    assert names == ["lr0.1-batch_size32", "lr0.1-batch_size128", "lr0.5-batch_size32",
                     "lr0.5-batch_size128"]  # fmt: skip
    assert points(swept)[1].settings == {"lr": "0.1", "batch_size": "128"}


def test_a_grid_needs_a_swept_setting_and_no_repeats():
    with pytest.raises(ConfigError, match="several values"):
        grid({"lr": "0.1"})
    with pytest.raises(ConfigError, match="--lr: a value twice"):
        grid({"lr": "0.1,0.1"})


def test_resuming_keeps_finished_points_and_moves_stopped_ones_aside(tmp_path):
    folder = tmp_path / "s"
    swept, shared = grid({"lr": "0.1,0.5,1.0", "epochs": 2})
    pts = plan(folder, swept, shared)
    write_canned_session(folder / pts[0].name)  # finished
    write_canned_session(folder / pts[1].name, status="interrupted")
    assert plan(folder, swept, shared) == pts  # the same grid: resumed
    assert [to_run(folder, p) for p in pts] == [False, True, True]
    assert (folder / f"{pts[1].name}.stopped-1" / "session.sqlite").exists()
    assert not (folder / pts[1].name).exists()
    with pytest.raises(SessionError, match="another grid"):
        plan(folder, {"lr": ["0.1", "0.2"]}, shared)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "y").write_text("")
    with pytest.raises(SessionError, match="is not a sweep"):
        plan(tmp_path / "x", swept, shared)

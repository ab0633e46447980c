"""The session store: exact round trips, liveness, follow(), and refusing what is not a session."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from canned import canned_records, write_canned_session

from sgdwalk import open_session
from sgdwalk.records import (
    FINISHED,
    INTERRUPTED,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    StepMeasured,
)
from sgdwalk.session import SessionError, SessionWriter, check_session_name, list_sessions


def test_records_round_trip_exactly(canned_session: Path):
    written = list(canned_records())
    with open_session(canned_session) as s:
        assert list(s.steps()) == [r for r in written if isinstance(r, StepMeasured)]
        assert list(s.epochs()) == [r for r in written if isinstance(r, EpochEnded)]
        assert list(s.curvature()) == [r for r in written if isinstance(r, CurvatureMeasured)]
        assert list(s.events()) == [r for r in written if isinstance(r, EventLogged)]
        assert s.status == FINISHED
        assert s.config["model"] == "mlp"


def test_steps_range_and_single_step(canned_session: Path):
    with open_session(canned_session) as s:
        assert [r.step for r in s.steps(10, 13)] == [10, 11, 12]
        assert s.step(5).step == 5 and s.step(10_000) is None
        assert [r.step for r in s.epoch_steps(2)] == list(range(25, 49))
        assert s.step_count() == 96 and s.last_step() == 96


def test_follow_yields_everything_in_step_order(canned_session: Path):
    with open_session(canned_session) as s:
        got = list(s.follow(poll=0.01))
    keys = []
    for r in got:
        step = r.steps if isinstance(r, EpochEnded) else r.step
        keys.append(step)
    assert keys == sorted(keys)
    assert len(got) == len(list(canned_records()))


def test_nan_loss_survives(tmp_path: Path):
    w = SessionWriter(tmp_path / "n", {}, {})
    nan = float("nan")
    w.write(StepMeasured(1, 1, 0.1, 4, nan, 0.0, grad_norm=nan, alphas=[0, 0.5, 1.0],
                         slice=[1.0, nan, nan], barrier=False, barrier_height=nan, floor_loss=nan,
                         floor_alpha=nan, interior_min=False, height_above_floor=nan,
                         step_norm=nan, dist_from_init=nan))  # fmt: skip
    w.close("diverged")
    rec = next(open_session(tmp_path / "n").steps())
    assert math.isnan(rec.batch_loss) and math.isnan(rec.slice[1]) and math.isnan(rec.floor_loss)
    assert rec.grad_cos is None


def test_existing_session_is_never_overwritten(canned_session: Path):
    before = canned_session.joinpath("session.sqlite").read_bytes()
    with pytest.raises(SessionError, match="already exists"):
        SessionWriter(canned_session, {}, {})
    assert canned_session.joinpath("session.sqlite").read_bytes() == before


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "", ".hidden", "x" * 200, "a\\b"])
def test_names_cannot_escape_the_sessions_folder(name: str):
    with pytest.raises(SessionError):
        check_session_name(name)


def test_foreign_corrupt_and_other_version_files_are_refused(tmp_path: Path, canned_session: Path):
    foreign = tmp_path / "foreign" / "session.sqlite"
    foreign.parent.mkdir()
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(SessionError, match="not an sgdwalk session"):
        open_session(foreign.parent)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SessionError, match="not an sgdwalk session"):
        open_session(junk)
    con = sqlite3.connect(canned_session / "session.sqlite")
    con.execute("PRAGMA user_version=99")
    con.close()
    with pytest.raises(SessionError, match="schema version 99"):
        open_session(canned_session)
    with pytest.raises(SessionError, match="no session"):
        open_session(tmp_path / "missing")


def test_a_dead_writer_reads_as_interrupted(tmp_path: Path):
    w = SessionWriter(tmp_path / "dead", {}, {})
    w.write(StepMeasured(1, 1, 0.1, 4, 1.0, 0.0))
    w.commit()
    with open_session(tmp_path / "dead") as s:
        assert s.status == "running" and s.alive
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        s._con.execute("UPDATE meta SET value=? WHERE key='pid'", (dead,))
        assert not s.alive and s.status == INTERRUPTED
    w.close(FINISHED)


def test_the_heartbeat_beats_while_nothing_is_written(tmp_path: Path):
    """A paused run writes no rows for minutes; its heartbeat thread alone says it is alive."""
    w = SessionWriter(tmp_path / "h", {}, {})
    try:
        with open_session(tmp_path / "h") as s:
            first = float(s._meta()["heartbeat"])
            deadline = time.monotonic() + 120  # a generous bound on a busy machine
            while float(s._meta()["heartbeat"]) < first + 2.5 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert float(s._meta()["heartbeat"]) >= first + 2.5
            assert w._heartbeat.is_alive() and not w._heartbeat.lost
    finally:
        w.close(FINISHED)


def test_writer_commits_within_a_second(tmp_path: Path):
    w = SessionWriter(tmp_path / "c", {}, {}, commit_interval=0.2)
    reader = open_session(tmp_path / "c")
    w.write(StepMeasured(1, 1, 0.1, 4, 1.0, 0.0))
    assert reader.step_count() == 0  # buffered: a step costs a list append
    w._last_commit -= 0.25  # as if 0.25 s had passed since the last commit
    w.write(StepMeasured(2, 1, 0.1, 4, 1.0, 0.0))
    assert reader.step_count() == 2
    w.close(FINISHED)


def test_follow_reads_a_session_another_process_writes(tmp_path: Path):
    target = tmp_path / "live"
    script = textwrap.dedent(f"""
        import time
        from sgdwalk.records import StepMeasured, EpochEnded
        from sgdwalk.session import SessionWriter
        w = SessionWriter({str(target)!r}, {{}}, {{}}, commit_interval=0.05)
        for t in range(1, 41):
            w.write(StepMeasured(t, 1 + (t - 1) // 20, 0.1, 4, 1.0 / t, t * 0.01))
            if t % 20 == 0:
                w.write(EpochEnded(t // 20, t, 0.5, 0.5, 0.5, 0.5, 0, 0.0))
            time.sleep(0.02)
        w.close("finished")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    s = None
    deadline = time.time() + 60
    while s is None and time.time() < deadline:
        try:
            s = open_session(target)  # succeeds once the schema is committed
        except SessionError:
            time.sleep(0.05)
    assert s is not None, "the writer never created its session"
    with s:
        got = list(s.follow(poll=0.05, idle_timeout=20))
        assert s.status == FINISHED
    proc.wait(10)
    steps = [r.step for r in got if isinstance(r, StepMeasured)]
    assert steps == list(range(1, 41))
    assert [type(r).__name__ for r in got].count("EpochEnded") == 2


def test_list_sessions_newest_first(tmp_path: Path):
    write_canned_session(tmp_path / "a")
    write_canned_session(tmp_path / "b")
    with sqlite3.connect(tmp_path / "a" / "session.sqlite") as con:  # a is an hour older
        con.execute("UPDATE meta SET value = value - 3600 WHERE key = 'started_at'")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "session.sqlite").write_bytes(b"nope")
    good, bad = list_sessions(tmp_path)
    assert [s.name for s in good] == ["b", "a"]
    assert [(p.name, "not an sgdwalk session" in why) for p, why in bad] == [("junk", True)]

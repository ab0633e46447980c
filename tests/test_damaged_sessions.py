"""Damaged session files: every reader path gives one clear line or draws, never a traceback.

A real session file (written through the real writer) is corrupted in one place per case: a value of
any table and column set to something of the wrong type or size, a table or meta key removed, a
column dropped or added, a row of NULLs, bytes of the file overwritten. Then the Python API
(``open_session`` and every iterator), ``ls`` and ``ls --json``, and ``export`` of every figure in
txt, csv and json (through ``main``, as the command line runs) must either work or fail with one
``sgdwalk: error:`` line and exit code 2. Replay and watch are driven through Pilot over a fixed set
of the same corruptions.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from canned import aio, drawn, run_cli, until, write_canned_session
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sgdwalk.errors import SessionError
from sgdwalk.session import TABLES, open_session
from sgdwalk.tui.commands.listing import summaries
from sgdwalk.tui.figures import FIGURES

TABLE_NAMES = [*TABLES, "meta"]
COLUMNS = {name: ([] if t.key else ["id"]) + [c.name for c in t.columns]
           for name, t in TABLES.items()} | {"meta": ["value"]}  # fmt: skip
KEYS = {name: t.key or "id" for name, t in TABLES.items()}
META_KEYS = ["config", "info", "status", "message", "started_at", "heartbeat", "pid", "host",
             "phase", "ended_at", "name", "schema_version"]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "\x1b[2J",
            "[bold]x",
            "{}",
            "[]",
            "[1, 2]",
            '[{"x": 1}]',
            '{"a": [1]}',
            "nan",
            "not json",
            '"running"',
            "running",
            "finished",
            "1e309",
        ]
    ),  # fmt: skip
    st.binary(max_size=40),
)
CHECKED = {"cases": 0}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_canned_session(tmp_path_factory.mktemp("pristine") / "s")


def copy_of(pristine: Path, root: Path) -> Path:
    target = root / "s"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(pristine, target)
    return target


def damage(path: Path, how: tuple) -> None:
    db = path / "session.sqlite"
    kind, *args = how
    if kind == "schema_bytes":  # bytes inside the schema's text, ``after`` bytes past ``where``
        where, after, junk = args
        offset = db.read_bytes().index(where) + after
        kind, args = "bytes", [offset, junk]
    if kind == "bytes":
        offset, junk = args
        data = bytearray(db.read_bytes())
        data[offset % len(data) : offset % len(data) + len(junk)] = junk
        db.write_bytes(bytes(data[: len(db.read_bytes())]))
        return
    with (
        contextlib.closing(sqlite3.connect(db)) as con,
        contextlib.suppress(
            sqlite3.IntegrityError,
            sqlite3.OperationalError,  # a damage SQLite itself refuses
        ),
    ):
        if kind == "value":
            table, column, row, value = args
            column = COLUMNS[table][column % len(COLUMNS[table])]
            key = "key" if table == "meta" else "rowid"
            rows = [r[0] for r in con.execute(f"SELECT {key} FROM {table}")]
            if table == "meta":
                rows = [k for k in META_KEYS if k in rows] or rows
            if rows:
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                            (value, rows[row % len(rows)]))  # fmt: skip
        elif kind == "drop_table":
            con.execute(f"DROP TABLE {args[0]}")
        elif kind == "drop_column":
            table, column = args
            names = [c for c in COLUMNS[table] if c != KEYS[table]]  # keys cannot be dropped
            if names:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {names[column % len(names)]}")
        elif kind == "add_column":
            con.execute(f"ALTER TABLE {args[0]} ADD COLUMN extra_{args[1]} TEXT DEFAULT 'x'")
        elif kind == "null_row" and args[0] != "meta":
            con.execute(f"INSERT INTO {args[0]} DEFAULT VALUES")
        elif kind == "forget_meta":
            con.execute("DELETE FROM meta WHERE key = ?", (args[0],))
        con.commit()


DAMAGE = st.one_of(
    st.tuples(
        st.just("value"),
        st.sampled_from(TABLE_NAMES),
        st.integers(0, 30),
        st.integers(0, 200),
        VALUES,
    ),  # fmt: skip
    st.tuples(st.just("drop_table"), st.sampled_from(TABLE_NAMES)),
    st.tuples(st.just("drop_column"), st.sampled_from(list(TABLES)), st.integers(0, 30)),
    st.tuples(st.just("add_column"), st.sampled_from(TABLE_NAMES), st.integers(0, 9)),
    st.tuples(st.just("null_row"), st.sampled_from(TABLE_NAMES)),
    st.tuples(st.just("forget_meta"), st.sampled_from(META_KEYS)),
    st.tuples(st.just("bytes"), st.integers(0, 200_000), st.binary(min_size=1, max_size=64)),
)


def read_everything(path: Path) -> None:
    """Every reader of the Python API; only ``SessionError`` may come out."""
    try:
        with open_session(path) as s:
            seen = [s.status, s.stored_status, s.alive, s.message, s.phase, s.heartbeat_age, s.pid]
            seen += [list(s.steps()), list(s.epochs()), list(s.curvature()), list(s.events())]
            seen += [s.step(5), list(s.epoch_steps(2)), s.step_count(), s.last_step()]
            seen += [s.barrier_count(), list(s.follow(poll=0.01, idle_timeout=0.05))]
    except SessionError as e:
        assert "\n" not in str(e) and str(e)


def assert_clean(code: int, err: str) -> None:
    """Worked, or one ``sgdwalk: error:`` line with exit code 2; no raw control characters."""
    lines = [ln for ln in err.splitlines() if ln.startswith("sgdwalk: error:")]
    assert code in (0, 2), err
    if code == 2:
        assert len(lines) == 1, err
    assert "\x1b" not in err


DAMAGE_CASES = {
    "slice blob of 7 bytes": ("value", "steps", 7, 10, b"\x00" * 7),
    "text in a loss": ("value", "steps", 4, 3, "\x1b[2J"),
    "status from elsewhere": ("value", "meta", 0, 2, "\x1b[2Jrunning"),
    "alignment with strange keys": ("value", "curvature", 6, 1, '[{"x": 1}]'),
    "no epochs table": ("drop_table", "epochs"),
    "a column too many": ("add_column", "steps", 1),
    "a row of NULLs": ("null_row", "events"),
    "no heartbeat": ("forget_meta", "heartbeat"),
    "config not an object": ("value", "meta", 0, 0, "[1, 2]"),
    "info not JSON": ("value", "meta", 0, 1, "not json"),
    "lr a word in the config": ("value", "meta", 0, 0, '{"lr": "fast", "model": {"a": 1}}'),
    "no curvature table": ("drop_table", "curvature"),
    "no meta table": ("drop_table", "meta"),
    "eigenvalues not a list": ("value", "curvature", 3, 2, '{"a": [1]}'),
    "a huge step number": ("value", "steps", 0, 5, 2**63 - 1),
    "a negative barrier count": ("value", "epochs", 6, 1, -(10**6)),  # hung plotext's bar fill
    "a page of junk": ("bytes", 4096, b"\xff" * 64),
    "a schema that is not UTF-8": ("schema_bytes", b"indexsqlite_autoindex_meta_1", 5, b"\x80"),
}


def with_every_case(test):
    """The named cases (one per class of damage found by hand) always run, then random ones."""
    for how in DAMAGE_CASES.values():
        test = example(how=how)(test)
    return test


@pytest.mark.slow
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@with_every_case
@given(how=DAMAGE)
def test_every_reader_path_survives_one_damaged_place(pristine, tmp_path, how):
    path = copy_of(pristine, tmp_path / "case")
    damage(path, how)
    CHECKED["cases"] += 1
    read_everything(path)
    rows, damaged = summaries(path.parent)
    assert len(rows) + len(damaged) == 1
    code, out, err = run_cli("ls", "--sessions-dir", str(path.parent))
    assert code == 0 and "\x1b" not in out, err
    code, out, err = run_cli("ls", "--json", "--sessions-dir", str(path.parent))
    assert code == 0, err
    for figure in FIGURES:
        for fmt in ("txt", "csv", "json"):
            code, _, err = run_cli("export", str(path), "--figure", figure, "--format", fmt,
                                   "-o", str(tmp_path / "out" / f"{figure}.{fmt}"), "--force")  # fmt: skip
            assert_clean(code, err)


@pytest.mark.parametrize("how", DAMAGE_CASES.values(), ids=DAMAGE_CASES.keys())
@aio
async def test_replay_and_watch_of_a_damaged_session_say_so_or_draw(pristine, tmp_path, how):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.replay import ReplaySource
    from sgdwalk.tui.dashboard.sources import WatchSource

    path = copy_of(pristine, tmp_path / "case")
    damage(path, how)
    try:
        cursor = ReplaySource(open_session(path))
    except SessionError:
        cursor = None
    if cursor is not None:
        app = make_app(cursor)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("end", "home", "right", "right_square_bracket")
            await drawn(pilot, app)
            assert "\x1b" not in app.dashboard.query_one("#status").text
        assert not app.return_code
    try:
        source = WatchSource(open_session(path))
    except SessionError:
        return
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        status = app.dashboard.query_one("#status").text
        assert "\x1b" not in status
    assert not app.return_code

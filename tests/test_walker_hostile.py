"""The Walker against hostile loops and places: forks, exits with a code, a second attach,
threads (their RNG streams, their steps), NaN probes, closure optimisers, misused arguments and
probes, sessions that cannot be made, failures inside the Walker. The rule: the user's training
survives its instrument; misuse found at construction is one ``ConfigError`` line naming the
argument, anything later is one ``sgdwalk: ...`` line on stderr and training goes on."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from canned import HANG, tmpfs
from torch import nn

import sgdwalk
from sgdwalk.records import FAILED, FINISHED, NOTE_EVENT, SKIPPED_EVENT
from sgdwalk.session import open_session
from sgdwalk.session.naming import SESSION_ENV, SESSIONS_ENV


def data(n: int = 64, d: int = 5, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def mlp(d: int = 5, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, classes))


def train(model, opt, x, y, steps: int, batch: int = 16) -> None:
    for i in range(steps):
        k = i * batch % len(x)
        loss = nn.functional.cross_entropy(model(x[k : k + batch]), y[k : k + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()


def session(folder: Path):
    with open_session(folder) as s:
        return s.status, s.message, list(s.steps()), list(s.events())


def leftovers(folder: Path) -> list[str]:
    """What is left in a sessions folder (nothing half-made may be)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------ scripts: forks and exits

SCRIPT = """
import os, signal, sys
import torch
from torch import nn
import sgdwalk

torch.set_num_threads(1)  # a forked child that trains must not wait on the parent's OpenMP pool
torch.manual_seed(0)
x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)


def steps(n):
    for _ in range(n):
        loss = nn.functional.cross_entropy(model(x[:16]), y[:16])
        opt.zero_grad()
        loss.backward()
        opt.step()


{body}
"""


def run_script(tmp_path: Path, body: str, name: str = "train.py") -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(textwrap.dedent(SCRIPT).format(body=textwrap.dedent(body)))
    return subprocess.run([sys.executable, str(path), str(tmp_path / "sessions")],
                          capture_output=True, text=True, timeout=HANG)  # fmt: skip


FORKS = """
walker = sgdwalk.Walker(model, (x, y), session="s", sessions_dir=sys.argv[1], budget=None).attach(opt)
steps(2)
for ending in ("exit", "raise", "steps"):
    pid = os.fork()
    if pid == 0:  # the child: its hooks, exit handler and excepthook must leave the session be
        if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
            os._exit(9)  # the Walker's stop handler followed the child
        if ending == "exit":
            sys.exit(0)
        if ending == "steps":
            steps(3)  # a child that trains on: measured nowhere
            sys.exit(0)
        raise ValueError("the child's own error")
    _, status = os.waitpid(pid, 0)
    print(ending, os.waitstatus_to_exitcode(status), flush=True)
steps(2)
"""


def test_a_forked_child_leaves_the_parents_session_alone(tmp_path):
    out = run_script(tmp_path, FORKS)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["exit", "0", "raise", "1", "steps", "0"]
    assert "the child's own error" in out.stderr  # the child's traceback is Python's, as ever
    status, message, steps, events = session(tmp_path / "sessions" / "s")
    assert status == FINISHED and [s.step for s in steps] == [1, 2, 3, 4]
    assert [e.kind for e in events if e.kind != NOTE_EVENT] == [FINISHED]


@pytest.mark.parametrize(
    ("body", "code", "status", "message"),
    [
        ("sys.exit(3)", 3, FAILED, "exit code 3"),
        ("sys.exit(0)", 0, FINISHED, "the script ended"),
        ("sys.exit()", 0, FINISHED, "the script ended"),
        ("raise SystemExit(0)", 0, FINISHED, "the script ended"),
        ("sys.exit('bad input')", 1, FAILED, "exit: bad input"),
        ("try:\n    sys.exit(2)\nexcept SystemExit:\n    steps(1)", 0, FINISHED, "the script ended"),
        ("with walker:\n    raise SystemExit(3)", 3, FAILED, "exit code 3"),
        ("with walker:\n    sys.exit(0)", 0, FINISHED, "the script ended"),
    ],
)  # fmt: skip
def test_an_exit_code_gives_the_session_its_status(tmp_path, body, code, status, message):
    out = run_script(tmp_path, "walker = sgdwalk.Walker(model, (x, y), session='s', "
                               "sessions_dir=sys.argv[1], budget=None).attach(opt)\nsteps(2)\n" + body)  # fmt: skip
    assert out.returncode == code, out.stderr
    got, got_message, steps, events = session(tmp_path / "sessions" / "s")
    assert (got, got_message) == (status, message) and events[-1].kind == status


# ------------------------------------------------------------------ attach, threads


def test_attach_twice_hooks_once_and_attach_after_close_says_so(tmp_path, capsys):
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    walker = sgdwalk.Walker(model, (x, y), session="a", sessions_dir=tmp_path, budget=None)
    assert walker.attach(opt) is walker.attach(opt)
    train(model, opt, x, y, steps=3)
    walker.close()
    walker.attach(opt)
    train(model, opt, x, y, steps=1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sgdwalk: ") and "closed" in err
    _, _, steps, events = session(tmp_path / "a")
    assert [s.step for s in steps] == [1, 2, 3] and all(s.batch_size == 16 for s in steps)
    assert not [e for e in events if e.kind == SKIPPED_EVENT]


def test_a_walker_never_attached_leaves_no_folder(tmp_path):
    import gc

    x, y = data()
    walker = sgdwalk.Walker(mlp(), (x, y), session="never", sessions_dir=tmp_path, budget=None)
    assert leftovers(tmp_path) == ["never"]  # claimed
    with pytest.raises(sgdwalk.ConfigError, match="^Walker: attach: "):
        walker.attach("not an optimizer")
    del walker
    gc.collect()
    assert leftovers(tmp_path) == []


def test_a_walker_in_one_thread_leaves_another_threads_random_stream_alone(tmp_path):
    x, y = data(n=512)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    walker = sgdwalk.Walker(
        model, (x, y), session="r", sessions_dir=tmp_path, points=20, budget=None
    )
    walker.attach(opt)
    torch.manual_seed(7)
    done, drawn = threading.Event(), []

    def draw() -> None:
        while not done.is_set():
            drawn.append(torch.rand(1).item())

    other = threading.Thread(target=draw)
    other.start()
    try:
        train(model, opt, x, y, steps=30)
    finally:
        done.set()
        other.join()
    walker.close()
    torch.manual_seed(7)
    assert drawn == [torch.rand(1).item() for _ in drawn]  # nothing rewound, nothing drawn for it


class Noisy(nn.Module):
    """Draws from the global RNG in every forward, in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x + 0.01 * torch.randn_like(x))


def test_a_model_that_draws_random_numbers_when_measured_keeps_the_users_stream(tmp_path):
    x, y = data()
    states = []
    for use in (False, True):
        model = Noisy()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        walker = None
        if use:
            walker = sgdwalk.Walker(model, (x, y), session="n", sessions_dir=tmp_path, budget=None)
            walker.attach(opt)
        torch.manual_seed(3)
        train(model, opt, x, y, steps=4)
        states.append((torch.rand(3), model.state_dict()))
        if walker is not None:
            walker.close()
    (a, sa), (b, sb) = states
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)
    notes = [e.message for e in session(tmp_path / "n")[3] if e.kind == NOTE_EVENT]
    assert any("restores the RNG state" in m for m in notes)


def test_steps_from_a_second_thread_are_not_measured_into_garbage(tmp_path, capsys):
    x, y = data(n=256)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    walker = sgdwalk.Walker(
        model, (x, y), session="t", sessions_dir=tmp_path, points=20, budget=None
    )
    walker.attach(opt)
    lock = threading.Lock()  # the user's own: no step while a backward runs

    def main(n: int) -> None:
        for i in range(n):
            with lock:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).backward()
            opt.step()  # at the same time as another thread's

    def other(n: int) -> None:
        for _ in range(n):
            with lock:
                opt.step()

    main(1)  # the main thread steps first: its steps are measured
    threads = [threading.Thread(target=other, args=(40,)) for _ in range(2)]
    for t in threads:
        t.start()
    main(20)
    for t in threads:
        t.join()
    walker.close()
    status, _, steps, events = session(tmp_path / "t")
    assert status == FINISHED and [s.step for s in steps] == list(range(1, 22))
    assert not [e for e in events if e.kind == SKIPPED_EVENT]
    assert [e.kind for e in events].count("warning") == 1
    err = capsys.readouterr().err
    assert err.count("sgdwalk: ") == 1 and "thread" in err


# ------------------------------------------------------------------ what is measured


def nan_probe_loss(m, batch):
    return nn.functional.cross_entropy(m(batch[0]), batch[1]) * math.nan


@pytest.mark.parametrize("how", ["inputs", "loss_fn"])
def test_a_nan_probe_is_one_warning(tmp_path, capsys, how):
    x, y = data()
    probe = (torch.full_like(x, math.nan), y) if how == "inputs" else (x, y)
    loss_fn = nan_probe_loss if how == "loss_fn" else None
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with sgdwalk.Walker(
        model, probe, loss_fn, session="nan", sessions_dir=tmp_path, budget=None
    ) as walker:
        walker.attach(opt)
        train(model, opt, x, y, steps=4)
    status, _, steps, events = session(tmp_path / "nan")
    assert status == FINISHED and len(steps) == 4
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].step == 1 and "probe" in warnings[0].message
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sgdwalk: warning: ")


def test_lbfgs_with_the_default_attach_records_no_gradient_as_nan(tmp_path):
    x, y = data()
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with sgdwalk.Walker(model, (x, y), session="lb", sessions_dir=tmp_path, budget=None) as walker:
        walker.attach(opt)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            opt.step(closure)
    _, _, steps, events = session(tmp_path / "lb")
    assert len(steps) == 3 and all(math.isnan(s.grad_norm) for s in steps)
    assert all(s.grad_cos is None for s in steps) and all(s.step_norm > 0 for s in steps)
    notes = [e for e in events if e.kind == NOTE_EVENT and "before=False" in e.message]
    assert len(notes) == 1


# ------------------------------------------------------------------ misuse at construction

BAD = [
    ({"probe_size": -10}, "probe_size"), ({"probe_size": 0}, "probe_size"),
    ({"points": 2.5}, "points"), ({"points": 10**6}, "points"), ({"points": True}, "points"),
    ({"chunk": -4}, "chunk"), ({"chunk": 0}, "chunk"), ({"budget": "0.5"}, "budget"),
    ({"budget": math.nan}, "budget"), ({"slice_mode": "fast"}, "slice_mode"),
    ({"measure_every": -1}, "measure_every"), ({"measure_every": 1.5}, "measure_every"),
    ({"top_k": 0}, "top_k"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": "64"}, "batch_size"), ({"total_steps": -1}, "total_steps"),
    ({"seed": "0"}, "seed"), ({"meta": ["not", "a", "dict"]}, "meta"),
    ({"meta": "text"}, "meta"), ({"session": 5}, "session"), ({"session": "a/b"}, "session"),
    ({"sessions_dir": 3}, "sessions_dir"), ({"decompose": "yes"}, "decompose"),
    ({"hessian_every": 0}, "hessian_every"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "argument"), BAD, ids=[next(iter(k)) for k, _ in BAD])
def test_a_bad_argument_is_one_config_error_naming_it(tmp_path, kwargs, argument):
    x, y = data()
    with pytest.raises(sgdwalk.ConfigError) as e:
        sgdwalk.Walker(mlp(), (x, y), **({"sessions_dir": tmp_path, "budget": None} | kwargs))
    assert str(e.value).startswith(f"Walker: {argument}: ") and "\n" not in str(e.value)
    assert leftovers(tmp_path) == []


def test_a_meta_that_is_not_json_leaves_nothing_half_made(tmp_path):
    cyclic: dict = {}
    cyclic["self"] = cyclic
    x, y = data()
    with pytest.raises(sgdwalk.ConfigError, match="^Walker: meta: "):
        sgdwalk.Walker(mlp(), (x, y), sessions_dir=tmp_path, meta=cyclic, budget=None)
    odd = {"a": object(), 3: [math.inf, torch.tensor(2.0)], "b": {"c": None}}
    w = sgdwalk.Walker(mlp(), (x, y), session="m", sessions_dir=tmp_path, meta=odd, budget=None)
    w.attach(torch.optim.SGD(w.model.parameters(), lr=0.1))
    w.close()
    with open_session(tmp_path / "m") as s:
        assert s.config["meta"]["3"] == ["inf", 2.0] and s.config["meta"]["b"] == {"c": None}
    assert leftovers(tmp_path) == ["m", "m/session.sqlite"]


class Takes4(nn.Module):
    """Takes inputs of 4 features (the probe has 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def test_a_probe_the_model_cannot_take_is_one_line_naming_it(tmp_path):
    x, y = data()
    cases = [
        (mlp(), (x[:0], y[:0]), None, "probe: it has no examples"),
        (Takes4(), (x, y), None, "probe: "),
        (mlp(), (x, y.float()), None, "probe: "),
        (mlp(), (x, y + 3), None, "probe: label"),
        (mlp(), (x, -y - 1), None, "probe: label"),
        (mlp(), (x, y), lambda m, b: "not a loss", "loss_fn: "),
        (mlp(), (x, y), lambda m, b: m(b[0]), "loss_fn: "),
        (mlp(), (x, y), lambda m, b: m(b["x"]), "loss_fn: "),
        (mlp(), {"x": x}, None, "probe: "),
    ]  # fmt: skip
    for model, probe, loss_fn, words in cases:
        with pytest.raises(sgdwalk.ConfigError) as e:
            sgdwalk.Walker(model, probe, loss_fn, sessions_dir=tmp_path, budget=None)
        assert str(e.value).startswith(f"Walker: {words}"), (words, str(e.value))
        assert "\n" not in str(e.value)
    assert leftovers(tmp_path) == []
    soft = torch.softmax(torch.randn(len(x), 3), 1)  # class probabilities are targets too
    sgdwalk.Walker(mlp(), (x, soft), session=None, sessions_dir=tmp_path, budget=None).close()
    ignored = torch.where(y == 0, -100, y)  # cross-entropy's ignore_index
    sgdwalk.Walker(mlp(), (x, ignored), session=None, sessions_dir=tmp_path, budget=None).close()


def test_report_and_epoch_take_numbers_only(tmp_path):
    x, y = data()
    walker = sgdwalk.Walker(mlp(), (x, y), session=None, sessions_dir=tmp_path, budget=None)
    for bad in ("abc", None, [1.0]):
        with pytest.raises(sgdwalk.ConfigError, match="^Walker: report: loss"):
            walker.report(bad)
    with pytest.raises(sgdwalk.ConfigError, match="^Walker: report: batch_size"):
        walker.report(1.0, batch_size=-2)
    for bad in ("2", 0, 1.5, True):
        with pytest.raises(sgdwalk.ConfigError, match="^Walker: epoch"):
            walker.epoch = bad
    walker.epoch = 2
    assert walker.epoch == 2
    walker.close()


def test_the_hf_callback_without_a_probe_on_an_iterable_dataset_says_so(tmp_path, capsys):
    pytest.importorskip("transformers")
    from sgdwalk.integrations.hf import WalkerCallback

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ({"input_ids": torch.zeros(4, dtype=torch.long)} for _ in range(8))

    loader = torch.utils.data.DataLoader(Stream(), batch_size=2)
    model = mlp()
    callback = WalkerCallback(session="hf", sessions_dir=tmp_path)
    args = type("Args", (), {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1})
    state = type("State", (), {"max_steps": 4, "epoch": 0})
    callback.on_train_begin(args, state, None, model=model, train_dataloader=loader,
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IterableDataset" in err and "probe=" in err
    callback.on_pre_optimizer_step(args, state, None)  # training goes on, unmeasured
    callback.on_optimizer_step(args, state, None)
    callback.on_train_end(args, state, None)
    with pytest.raises(sgdwalk.ConfigError, match="^Walker: points: "):
        WalkerCallback(points=0)  # the Walker's arguments are checked when the callback is made
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ sessions that cannot be made


def test_a_session_that_cannot_be_made_leaves_training_unmeasured(tmp_path, capsys, monkeypatch):
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sgdwalk.Walker(model, (x, y), session="taken", sessions_dir=tmp_path, budget=None).attach(
        opt
    ).close()
    before = leftovers(tmp_path)
    (tmp_path / "a-file").write_text("")
    for kwargs in ({"session": "taken"}, {"sessions_dir": tmp_path / "a-file"}):
        opts = {"sessions_dir": tmp_path} | kwargs
        with sgdwalk.Walker(model, (x, y), **opts, budget=None) as walker:
            walker.attach(opt)
            train(model, opt, x, y, steps=2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sgdwalk: not measuring"), err
    # two Walkers under one `sgdwalk exec`: the first takes the session, the second says so
    monkeypatch.setenv(SESSION_ENV, "exec-name")
    monkeypatch.setenv(SESSIONS_ENV, str(tmp_path))
    first = sgdwalk.Walker(model, (x, y), budget=None).attach(opt)
    second = sgdwalk.Walker(model, (x, y), budget=None).attach(opt)
    train(model, opt, x, y, steps=2)
    second.close()
    first.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exec-name" in err
    assert session(tmp_path / "exec-name")[0] == FINISHED
    assert len(session(tmp_path / "exec-name")[2]) == 2
    third = sgdwalk.Walker(model, (x, y), budget=None).attach(
        opt
    )  # a session there already: said, not raised
    train(model, opt, x, y, steps=1)
    third.close()
    assert capsys.readouterr().err.startswith("sgdwalk: not measuring")
    assert len(session(tmp_path / "taken")[2]) == 0  # the first session is as it was
    assert leftovers(tmp_path) == sorted([*before, "a-file", "exec-name",
                                          "exec-name/session.sqlite"])  # fmt: skip


def test_a_full_or_read_only_sessions_folder_leaves_training_unmeasured(tmp_path, capsys):
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tmpfs(tmp_path / "full", "size=64k") as full:
        with contextlib.suppress(OSError), open(full / "ballast", "wb") as f:
            f.write(b"\0" * (128 << 10))  # fills the disk
        with sgdwalk.Walker(model, (x, y), session="f", sessions_dir=full, budget=None) as walker:
            walker.attach(opt)
            train(model, opt, x, y, steps=2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sgdwalk: not measuring"), err
        assert [p.name for p in full.iterdir()] == ["ballast"]
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        with sgdwalk.Walker(model, (x, y), session="r", sessions_dir=ro, budget=None) as walker:
            walker.attach(opt)
            train(model, opt, x, y, steps=2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sgdwalk: not measuring"), err


# ------------------------------------------------------------------ failures inside the Walker


def test_a_failure_inside_the_walker_keeps_its_traceback(tmp_path, capsys):
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    walker = sgdwalk.Walker(model, (x, y), session="e", sessions_dir=tmp_path, budget=None).attach(
        opt
    )
    train(model, opt, x, y, steps=2)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the meter")

    walker.instrument.after_update = broken
    train(model, opt, x, y, steps=2)  # training goes on
    status, message, steps, _ = session(tmp_path / "e")
    assert status == FAILED and "a bug in the meter" in message and len(steps) == 2
    trace = (tmp_path / "e" / "error.txt").read_text()
    assert trace.startswith("Traceback") and "in broken" in trace
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sgdwalk: measuring stopped")


def test_ls_shows_the_batch_size_the_steps_recorded(tmp_path):
    from sgdwalk.tui.commands.listing import summaries

    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with sgdwalk.Walker(model, (x, y), session="b", sessions_dir=tmp_path, budget=None) as walker:
        walker.attach(opt)
        train(model, opt, x, y, steps=2, batch=8)
    rows, damaged = summaries(tmp_path)
    assert damaged == [] and [r["batch_size"] for r in rows] == [8]

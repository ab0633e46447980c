"""Bad input, every class of it: one ``sgdwalk: error:`` line and exit code 2, no traceback.

Each case runs the command line in-process (``main``, as the ``sgdwalk`` script does), so the table
is quick; the subprocess tests in test_cli.py show the same path end to end.
"""

from __future__ import annotations

import pytest
from canned import run_cli, write_canned_session


def headless(*args: str) -> tuple[str, ...]:
    return ("run", "--headless", "--hessian-every", "off", "--epochs", "1", *args)


# (arguments, a piece of the one line, exit code); {tmp} is a scratch folder
CASES = [
    (headless("--config", "{tmp}"), "is not a regular file", 2),
    (headless("--config", "/dev/null"), "is not a regular file", 2),
    (headless("--config", "{tmp}/run-not-a-table.toml"), "'run' must be a table", 2),
    (headless("--config", "{tmp}/missing.toml"), "config file not found", 2),
    (headless("--seed", str(2**70)), "--seed: must be in 0..", 2),
    (headless("--seed", "-1"), "--seed: must be in 0..", 2),
    (headless("--epochs", str(10**12)), "--epochs: 1000000000000 is beyond any sensible", 2),
    (headless("--points", "100000000"), "--points: at most 1000", 2),
    (headless("--threads", "100000"), "--threads: 100000 is far beyond this machine", 2),
    (headless("--train-size", "100000"), "--train-size: 100000 is more than the 1500", 2),
    (headless("--batch-size", "99999999999999"), "--batch-size: 99999999999999 is beyond", 2),
    (headless("--sessions-dir", ""), "--sessions-dir: give a folder", 2),
    (headless("--data-dir", " "), "--data-dir: give a folder", 2),
    (headless("--session", "name\n"), "invalid session name 'name\\n'", 2),
    (headless("--session", "../x"), "invalid session name", 2),
    (headless("--lr", "inf"), "--lr: must be a positive number", 2),
    (headless("--model", "vgg11", "--top-k", "5000", "--hessian-every", "1"), "Lanczos basis", 2),
    (headless("--model", "wrn", "--wrn-width", "100000"), "--model wrn: cannot build it", 2),
    (headless("--dataset", "cifar10", "--data-dir", "{tmp}/nothing"), "CIFAR-10 not found", 2),
    (("bench", "--repeats", "0"), "--repeats: must be in 1..1000", 2),
    (("bench", "--threads", "100000"), "--threads: 100000 is far beyond", 2),
    (("export", "{session}", "--epoch", str(2**70)), "--epoch must be a whole number", 2),
    (("export", "{session}", "--window", str(10**12)), "--window 1000000000000", 2),
    (("export", "{session}", "--width", "100000"), "--width must be in 20..1000", 2),
    (("export", "{session}", "--steps", f"1:{2**70}", "-o", "-"), None, 0),
    (("export", "", "-o", "-"), "no session ''", 2),
    (("replay", "bad\nname", "--sessions-dir", "{tmp}"), "invalid session name", 2),
    (("watch", "ghost", "--sessions-dir", "{tmp}", "--wait", "0"), "no session 'ghost'", 2),
    (("watch", "ghost", "--wait", "-1"), "--wait: must be in 0..86400", 2),
    (("ls", "--sessions-dir", "{tmp}/nothing"), "no sessions folder", 2),
    (("run", "--no-such-flag"), "No such option: --no-such-flag", 2),
    # several processes: checked before torchrun starts (a garbage endpoint took 92 s in torchrun)
    (
        headless("--nproc", "1000", "--device", "cpu"),
        "--nproc: 1000 processes on this machine's",
        2,
    ),
    (headless("--nnodes", "2", "--rdzv-endpoint", "garbage"), "'garbage' is not host:port", 2),
    (headless("--nnodes", "2", "--rdzv-endpoint", "host:notaport"), "'notaport' in 'host:", 2),
    (headless("--nnodes", "2", "--rdzv-endpoint", "localhost:0"), "is not a port (1..65535)", 2),
    (
        headless("--nnodes", "2", "--rdzv-endpoint", "no-such-host.invalid:29400"),
        "cannot resolve host 'no-such-host.invalid'",
        2,
    ),
    (
        headless("--nnodes", "abc", "--rdzv-endpoint", "localhost:29400"),
        "--nnodes: 'abc' is not",
        2,
    ),
    (headless("--nnodes", "0", "--rdzv-endpoint", "localhost:29400"), "--nnodes: '0' is not", 2),
    (
        headless("--nnodes", "2:1", "--rdzv-endpoint", "localhost:29400"),
        "--nnodes: '2:1' is not",
        2,
    ),
    # an optimizer and the knobs it has (a knob it lacks is refused, never silently ignored)
    (headless("--optimizer", "lion"), "--optimizer: unknown optimizer 'lion'; choose from", 2),
    (headless("--betas", "0.9,0.99"), "--betas: sgd has no betas", 2),
    (headless("--optimizer", "rmsprop", "--betas", "0.9,0.99"), "--betas: rmsprop has no", 2),
    (headless("--optimizer", "adam", "--betas", "0.9"), "--betas: give two numbers B1,B2", 2),
    (headless("--optimizer", "adam", "--betas", "0.9,1"), "--betas: each must be in [0, 1)", 2),
    (headless("--optimizer", "adam", "--betas", "-0.1,0.9"), "--betas: each must be in [0, 1)", 2),
    (headless("--optimizer", "adamw", "--betas", "nan,0.9"), "--betas: each must be in [0, 1)", 2),
    (headless("--optimizer", "adam", "--betas", "a,b"), "--betas: give two numbers B1,B2", 2),
    (headless("--optimizer", "adam", "--momentum", "0.9"), "--momentum: adam's momentum is β1", 2),
    (headless("--eps", "1e-8"), "--eps: sgd has no ε", 2),
    (headless("--optimizer", "adam", "--eps", "0"), "--eps: must be a positive number, got 0", 2),
    (headless("--optimizer", "rmsprop", "--eps", "-1"), "--eps: must be a positive number", 2),
    (headless("--optimizer", "adam", "--eps", "inf"), "--eps: must be a positive number", 2),
    # token sequences go to the transformer, images to the others
    (headless("--model", "transformer"), "transformer reads token sequences, and digits is", 2),
    (headless("--dataset", "modular-addition"), "--model: mlp reads images, and modular-", 2),
    (
        headless("--model", "transformer", "--dataset", "modular-addition", "--augment"),
        "--augment: crop+flip is for images",
        2,
    ),
    # BatchNorm cannot train on (or normalise a probe chunk of) one example
    (headless("--batch-size", "1"), "--batch-size 1: mlp's BatchNorm needs at least 2 examples", 2),
    (headless("--probe-chunk", "1"), "--probe-chunk 1: BatchNorm normalises each probe chunk", 2),
    # exec: what cannot be started
    (("exec", "--sessions-dir", "{tmp}/s", "--", ""), "exec: the command to run is empty", 2),
    (("exec", "--sessions-dir", "{tmp}/s", "--", "{tmp}"), "is a folder, not a program", 2),
    (
        ("exec", "--sessions-dir", "{tmp}/s", "--", "{tmp}/run-not-a-table.toml"),
        "is not executable: `chmod +x",
        2,
    ),
]


@pytest.mark.parametrize("args, needle, code", CASES, ids=[" ".join(a)[:60] for a, _, _ in CASES])
def test_bad_input_is_one_line(tmp_path, args, needle, code):
    (tmp_path / "run-not-a-table.toml").write_text('run = "fast"\n')
    session = write_canned_session(tmp_path / "sessions" / "canned")
    args = tuple(a.format(tmp=tmp_path, session=session) for a in args)
    got, out, err = run_cli(*args, cwd=tmp_path)
    assert got == code, (out, err)
    if needle is None:
        assert err == ""
        return
    assert err.count("\n") == 1 and err.startswith("sgdwalk: error: "), err
    assert needle in err
    assert not (tmp_path / "sessions").is_dir() or [p.name for p in
                                                     (tmp_path / "sessions").iterdir()] == ["canned"]  # fmt: skip

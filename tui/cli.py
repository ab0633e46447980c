"""The ``sgdwalk`` command line (Typer).

Commands stay thin: they parse, call into ``engine`` or the UI modules, and map every expected
failure (bad flags, missing data, unreadable sessions) to one line on stderr and exit code 2.
torch is imported inside the commands that need it, so ``sgdwalk --help`` and ``sgdwalk ls`` are
instant. Nothing is listed twice: ``run``'s settings are options made from ``RunConfig``'s fields
(``sgdwalk.tui.options``), and ``export --figure`` names the figures of ``FIGURES``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sgdwalk.config import RunConfig, build_config
from sgdwalk.session.naming import SESSIONS_ENV, sessions_folder
from sgdwalk.tui.figures import FIGURES
from sgdwalk.tui.options import option, takes_settings

try:  # typer >= 0.20 vendors click as typer._click; older releases use click itself
    from typer import _click as click  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import click  # type: ignore[no-redef]

app = typer.Typer(
    name="sgdwalk",
    help="Watch SGD walk the loss surface of your network, live, in the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def default_sessions_dir() -> str:
    return str(sessions_folder())


# ---------------------------------------------------------------- run

Opt = typer.Option
SessionsDirOpt = Annotated[str | None, option(RunConfig, "sessions_dir")]
SessionArg = Annotated[str, typer.Argument(help="session folder, or a name in the sessions folder")]


@app.command(no_args_is_help=False)
@takes_settings(RunConfig)
def run(
    config: Annotated[Path | None, Opt(help="TOML file with any of these settings")] = None,
    headless: Annotated[
        bool, Opt("--headless", help="no dashboard: progress bar and epoch lines")
    ] = False,
    in_process: Annotated[
        bool,
        Opt(
            "--in-process",
            help="train inside the dashboard's process (a worker thread) instead "
            "of a child process; slower on CPU, where both share one interpreter lock",
        ),  # fmt: skip
    ] = False,
    detach: Annotated[
        bool,
        Opt(
            "--detach",
            help="train in a background process and watch it; quitting leaves it running",
        ),
    ] = False,
    **settings: Any,
) -> None:
    """Train and measure the landscape every step; saves a session.

    Shows the live dashboard in a terminal; with --headless, or when stdout is not a terminal,
    prints a progress bar and one line per epoch instead. Exit code: 0 finished, 1 failed,
    3 diverged, 130 interrupted (Ctrl+C, SIGTERM, SIGHUP), 2 bad input.
    """
    from sgdwalk import torchrun

    flags = torchrun.rank_flags(settings)  # a rank of a user's own torchrun
    if flags["sessions_dir"] is None and SESSIONS_ENV in os.environ:
        flags["sessions_dir"] = os.environ[SESSIONS_ENV]
    raise typer.Exit(_train(build_config(flags, config), headless, in_process, detach))


def _train(cfg: RunConfig, headless: bool, in_process: bool, detach: bool) -> int:
    """Train where ``run``'s flags say, watched (or not) as they say; the exit code."""
    from sgdwalk import torchrun

    terminal = sys.stdout.isatty()
    launches = torchrun.launches(cfg)
    if launches and in_process:
        from sgdwalk.errors import UsageError

        raise UsageError("--in-process: several processes (--nproc) cannot train in the "
                         "dashboard's own process")  # fmt: skip
    if launches:
        torchrun.check_launch(cfg)
    if launches and (headless or not terminal) and not detach:
        from sgdwalk.tui.commands.launcher import run_torchrun

        return run_torchrun(cfg)
    if detach:
        from sgdwalk.tui.commands import dashboards

        return dashboards.run_detached(cfg, terminal and not headless)
    if headless or not terminal:
        from sgdwalk.tui.commands.headless import run_headless

        return run_headless(cfg)
    from sgdwalk.tui.commands import dashboards

    if in_process:
        return dashboards.run_in_process(cfg)
    return dashboards.run_in_terminal(cfg)


# ---------------------------------------------------------------- sweep

SWEEP_HELPS = {
    "session": "the sweep's name: a folder in the sessions folder with one session per run "
    "[default: sweep-SETTINGS-DIGEST, the same for the same command]",
    "threads": "CPU threads for each run [default: free cores / runs at a time]",
    "log_to": "also send each run's scalars to tensorboard:DIR (a subfolder per run), "
    "wandb[:PROJECT] or trackio[:PROJECT] (repeat, or comma-separated)",
}


@app.command(no_args_is_help=True)
@takes_settings(RunConfig, as_text=True, helps=SWEEP_HELPS)
def sweep(
    parallel: Annotated[
        int | None,
        Opt(help="runs training at a time [default: one per free core, at most the runs]"),
    ] = None,
    headless: Annotated[
        bool, Opt("--headless", help="no comparison view: one line per run as it ends")
    ] = False,
    **settings: Any,
) -> None:
    """Train a grid of runs on this machine and compare them live.

    Give any of run's settings several values, comma-separated (--lr 0.1,0.5,1.0 --batch-size
    32,128): every combination is a run, with its own session, in the sweep's folder
    (SESSIONS/NAME/lr0.1-batch_size32, ...), --parallel of them at a time. In a terminal the
    comparison view shows them as they train (q or Ctrl+C stops them all); with --headless, or
    without a terminal, each run's line is printed as it ends. A stopped sweep resumes when the
    same command is given again: finished runs are kept, stopped ones (moved aside) run again.
    Compare later with sgdwalk compare NAME. Exit code: 0 all finished, 1 a run failed, 3 one
    diverged, 130 interrupted, 2 bad input.
    """
    from sgdwalk.tui.commands.sweep import run_sweep

    raise typer.Exit(run_sweep(settings, parallel, headless))


# ---------------------------------------------------------------- exec


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    ctx: typer.Context,
    session: Annotated[
        str | None, Opt(help="session name [default: SCRIPT-YYYYmmdd-HHMMSS]")
    ] = None,
    sessions_dir: SessionsDirOpt = None,
    headless: Annotated[
        bool, Opt("--headless", help="no dashboard: run the script here, its output passing through")
    ] = False,
    detach: Annotated[
        bool,
        Opt("--detach", help="run the script in the background and watch it; quitting leaves it "
            "running"),
    ] = False,
) -> None:  # fmt: skip
    """Run your own training script (it uses sgdwalk.Walker) and watch it in the dashboard.

    Usage: sgdwalk exec [OPTIONS] -- python train.py ARGS. The script's Walker writes the session
    this command names (through $SGDWALK_SESSION and $SGDWALK_SESSIONS); p pauses it between steps,
    s stops it cleanly, q asks. The script's stdin is /dev/null (it cannot prompt); its output
    passes through with --headless, else goes to run.log in the session. A script that will not
    stop is killed 30 s after SIGTERM ($SGDWALK_STOP_GRACE). Exit code: the script's own (130
    when it was stopped); 2 when it ended without creating a session.
    """
    from sgdwalk.tui.commands.execute import exec_script

    folder = Path(sessions_dir or default_sessions_dir())
    raise typer.Exit(exec_script(list(ctx.args), session, folder, detach, headless))


# ---------------------------------------------------------------- watch, replay


@app.command()
def watch(
    session: SessionArg,
    sessions_dir: SessionsDirOpt = None,
    wait: Annotated[
        float, Opt(help="seconds to wait for a session that does not exist yet (a run starting)")
    ] = 60.0,
) -> None:
    """Follow a session another process writes (live or finished) in the dashboard."""
    from sgdwalk.errors import UsageError
    from sgdwalk.tui.commands.dashboards import watch as watch_session

    if not 0 <= wait <= 86_400:
        raise UsageError(f"--wait: must be in 0..86400 seconds, got {wait}")
    folder = Path(sessions_dir or default_sessions_dir())
    raise typer.Exit(watch_session(session, folder, wait=wait))


@app.command()
def replay(
    session: SessionArg,
    sessions_dir: SessionsDirOpt = None,
) -> None:
    """Replay a saved session: play/pause, speed, step and epoch seek."""
    from sgdwalk.tui.commands.dashboards import replay as replay_session

    raise typer.Exit(replay_session(session, Path(sessions_dir or default_sessions_dir())))


# ---------------------------------------------------------------- ls


@app.command("ls")
def ls(
    sessions_dir: SessionsDirOpt = None,
    as_json: Annotated[bool, Opt("--json", help="print JSON for scripts")] = False,
) -> None:
    """List sessions, newest first."""
    from sgdwalk.tui.commands.listing import print_sessions

    print_sessions(Path(sessions_dir or default_sessions_dir()), as_json)


# ---------------------------------------------------------------- compare


@app.command("compare")
def compare_(
    sessions: Annotated[
        list[str],
        typer.Argument(help="sessions (names or folders), or a sweep's name", show_default=False),
    ],
    as_json: Annotated[
        bool,
        Opt("--json", help="print one object per run for scripts (name, lr, batch_size, "
            "interior_min_fraction with _low/_high, barriers, barriers_per_epoch, final_loss, "
            "lambda1, edge_ratio, ...)"),
    ] = False,
    sessions_dir: SessionsDirOpt = None,
) -> None:  # fmt: skip
    """Runs side by side, live while they train, or finished.

    One row per run (interior-minimum share with its 95% interval, barriers per epoch, final
    loss, λ1, the edge ratio) and one figure of all of them, re-read every 2 s: tab shows the
    next figure, [ and ] the slices of an epoch, q quits. Without a terminal the table is
    printed once. Export the overlaid figures with sgdwalk export SESSION... .
    """
    from sgdwalk.tui.commands.compare import compare

    folder = Path(sessions_dir or default_sessions_dir())
    raise typer.Exit(compare(sessions, folder, as_json))


# ---------------------------------------------------------------- export


@app.command()
def export(
    sessions: Annotated[
        list[str],
        typer.Argument(help="session folders or names in the sessions folder", show_default=False),
    ],
    figure: Annotated[str, Opt("--figure", "-f", help=f"{', '.join(FIGURES)} or all")] = "slices",
    fmt: Annotated[
        str | None,
        Opt("--format", help="txt, svg, html, png, pdf, csv or json [default: from -o, else txt]"),
    ] = None,
    output: Annotated[
        str | None,
        Opt(
            "--output",
            "-o",
            help="file, or directory for --figure all; '-' for stdout "
            "[default: SESSION-FIGURE.FORMAT]",
        ),  # fmt: skip
    ] = None,
    epoch: Annotated[
        list[int] | None, Opt(help="epoch to show (repeat for alignment) [default: slices: 1]")
    ] = None,
    steps: Annotated[str | None, Opt(help="steps A:B, i.e. A <= step < B")] = None,
    window: Annotated[
        int | None, Opt(help="consecutive steps shown [default: slices 40, others all]")
    ] = None,
    metric: Annotated[
        str, Opt(help="alignment: subspace, eig_cos, rayleigh or full_cos")
    ] = "subspace",
    width: Annotated[int, Opt(help="txt/svg/html width in characters")] = 100,
    height: Annotated[int, Opt(help="txt/svg/html height in lines")] = 30,
    force: Annotated[bool, Opt("--force", help="overwrite existing files")] = False,
    sessions_dir: SessionsDirOpt = None,
) -> None:
    """Static figures of the paper (txt, svg, html; png/pdf with the plots extra) and their
    numbers (csv, json). Several sessions are overlaid, labelled by what differs."""
    from sgdwalk.tui.figures.export import ExportRequest, run_export

    req = ExportRequest(
        sessions=sessions, figure=figure, fmt=fmt, output=output, epochs=epoch or [],
        steps=steps, window=window, metric=metric, width=width, height=height, force=force,
        sessions_dir=sessions_dir or default_sessions_dir(),
    )  # fmt: skip
    run_export(req, echo=lambda line: typer.echo(line, err=True))


# ---------------------------------------------------------------- bench


@app.command()
def bench(
    model: Annotated[str, Opt(help="model to measure")] = "mlp",
    dataset: Annotated[
        str, Opt(help="dataset (digits, synthetic-mnist, synthetic-cifar10, ...)")
    ] = "digits",
    device: Annotated[str, Opt(help="auto, cpu or cuda")] = "auto",
    batch_size: Annotated[str, Opt(help="training batch size")] = "64",
    points: Annotated[int, Opt(help="K, slice intervals")] = 10,
    lr: Annotated[
        float,
        Opt(
            help="learning rate of the timed steps (timings do not depend on it; 0.1 "
            "keeps every model's loss finite)"
        ),
    ] = 0.1,
    slice_mode: Annotated[
        str, Opt(help="the slice mode the run would use: auto, loop or vmap (both are timed)")
    ] = "auto",
    repeats: Annotated[int, Opt(help="timing repeats, 1-1000 (median is reported)")] = 7,
    threads: Annotated[
        int | None, Opt(help="CPU threads for torch [default: as sgdwalk run chooses]")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="print JSON for machines")] = False,
) -> None:
    """Cost of each measurement relative to its ideal on this machine."""
    from sgdwalk.bench import run_bench
    from sgdwalk.errors import ConfigError

    if not 1 <= repeats <= 1000:
        raise ConfigError(f"--repeats: must be in 1..1000, got {repeats}")
    cfg = build_config({"model": model, "dataset": dataset, "device": device,
                        "batch_size": batch_size, "points": points, "lr": lr,
                        "slice_mode": slice_mode, "threads": threads,
                        "data_dir": os.environ.get("SGDWALK_DATA", "data")})  # fmt: skip
    result = run_bench(cfg, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from sgdwalk.tui.commands.listing import print_bench

    print_bench(result)


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> Any:
    """The entry point: every expected failure is one line on stderr and its exit code."""
    from sgdwalk.errors import EXIT_USAGE, SgdwalkError
    from sgdwalk.tui.text import say_error

    try:
        result = app(args=argv, prog_name="sgdwalk", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # `sgdwalk` alone prints help
        typer.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(0)
    except click.exceptions.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "sgdwalk"
        say_error(f"{e.format_message()} (see {cmd} --help)")
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        say_error("interrupted")
        sys.exit(130)
    except SgdwalkError as e:
        say_error(e)
        sys.exit(e.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()

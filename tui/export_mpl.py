"""Publication figures (png, pdf) with matplotlib, the optional ``plots`` extra.

Why this shape: matplotlib is heavy and optional, so it is imported here only, and only when a png
or pdf is asked for. Figures are built on ``matplotlib.figure.Figure`` directly, never through
pyplot, so no GUI backend is ever chosen: export works over SSH, in cron and in CI with no display.
The points come from the same ``tui.charts.*_series`` functions as the terminal figures;
``build_figure`` returns the Figure so tests can count its series before it is saved.
"""

from __future__ import annotations

import io
import math
from typing import Any

from sgdwalk.tui import charts

INSTALL = "pip install 'sgdwalk[plots]'"
FIGSIZE = (7.0, 3.6)
STEP_LINES_MAX = 200  # beyond this the gray step lines merge into a gray wash


def require_matplotlib() -> None:
    from sgdwalk.tui.cli import UserError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"png and pdf need matplotlib; install it with: {INSTALL}") from None


def _label(label: str | None, what: str) -> str:
    return what if label is None else f"{label}: {what}"


def _color(i: int, n: int, single: str) -> str:
    return single if n == 1 else f"C{i}"


# ---------------------------------------------------------------- one function per figure


def _slices(ax: Any, data: list[Any], **_: Any) -> None:
    """The paper's Figure 1: gray step lines, interpolated loss, loss at steps, dashed floor."""
    n = len(data)
    for i, d in enumerate(data):
        s = charts.slice_series(d.steps)
        if i == 0 and len(s.step_x) <= STEP_LINES_MAX:  # one collection: fast for many steps
            ax.vlines(s.step_x, 0, 1, transform=ax.get_xaxis_transform(), colors="0.85", lw=0.6,
                      zorder=0)  # fmt: skip
        curve_y = [math.nan if y is None else y for y in s.curve_y]  # NaN breaks the line at gaps
        ax.plot(s.curve_x, curve_y, "-", marker=".", ms=2.5, lw=1.0, color=_color(i, n, "C0"),
                label=_label(d.label, "interpolated loss"))  # fmt: skip
        ax.plot(s.step_x, s.step_y, "o", ms=4, color=_color(i, n, "C3"),
                label=_label(d.label, "loss at step"))  # fmt: skip
        ax.plot(s.floor_x, s.floor_y, "--", lw=1.0, color=_color(i, n, "k"),
                label=_label(d.label, "valley floor"))  # fmt: skip
    ax.set_xlabel("step + α  (θ_t + αΔ_t between step t and t+1)")
    ax.set_ylabel("training loss (probe set)")
    ax.set_title("Loss interpolated between consecutive steps")


def _barriers(ax: Any, data: list[Any], **_: Any) -> None:
    n = len(data)
    width = 0.8 / n
    twin = ax.twinx()
    for i, d in enumerate(data):
        xs, per, running = charts.barrier_series(d.epochs)
        offset = (i - (n - 1) / 2) * width
        ax.bar([x + offset for x in xs], per, width=width, color=_color(i, n, "C1"),
               label=_label(d.label, "barriers per epoch"))  # fmt: skip
        twin.plot(xs, running, "--o", ms=3, color=_color(i, n, "C0"),
                  label=_label(d.label, "total"))  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("barriers crossed")
    twin.set_ylabel("total barriers")
    ax.xaxis.get_major_locator().set_params(integer=True)
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, frameon=False)
    ax.set_title("Barriers crossed per epoch")


_STD = {"subspace": "subspace_std", "rayleigh": "rayleigh_std", "full_cos": "full_cos_std"}


def _std(a: Any, metric: str) -> float:
    if metric == "eig_cos":
        return sum(a.eig_cos_std) / len(a.eig_cos_std) if a.eig_cos_std else 0.0
    return getattr(a, _STD[metric])


def _alignment(ax: Any, data: list[Any], metric: str = "subspace", **_: Any) -> None:
    """Figures 5-6: alignment against batch size, mean ± std over the sampled batches."""
    from matplotlib import colormaps
    from matplotlib.ticker import NullFormatter

    sizes: set[int] = set()
    for i, d in enumerate(data):
        series = charts.alignment_series(d.curvature, metric)
        for j, (c, xs, ys) in enumerate(series):
            stds = [_std(a, metric) for a in sorted(c.alignment, key=lambda a: a.batch_size)
                    if a.batch_size in xs]  # fmt: skip
            shade = 0.35 + 0.65 * (j + 1) / len(series)
            color = colormaps["viridis"](j / max(1, len(series) - 1)) if len(data) == 1 else f"C{i}"
            ax.errorbar(xs, ys, yerr=stds, fmt="-o", ms=3, capsize=2, color=color,
                        alpha=1.0 if len(data) == 1 else shade,
                        label=_label(d.label, f"epoch {c.epoch}"))  # fmt: skip
            sizes.update(xs)
    if sizes and min(sizes) > 0:
        ax.set_xscale("log")
        ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel(charts.ALIGN_TITLES[metric])
    ax.set_title("Gradient alignment with the top Hessian eigenvectors")


def _cosine(ax: Any, data: list[Any], **_: Any) -> None:
    """Figure 7: cosine of consecutive mini-batch gradients (and updates) against step."""
    n = len(data)
    for i, d in enumerate(data):
        series = charts.cosine_series(d.steps)
        gx, gy = series["grad_cos"]
        ux, uy = series["update_cos"]
        ax.plot(gx, gy, "-", lw=0.8, color=_color(i, n, "C0"),
                label=_label(d.label, "cos(g_{t-1}, g_t)"))  # fmt: skip
        ax.plot(ux, uy, ":", lw=0.8, color=_color(i, n, "C2"),
                label=_label(d.label, "cos(Δ_{t-1}, Δ_t)"))  # fmt: skip
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine")
    ax.set_title("Cosine of consecutive gradients and updates")


def _loss(ax: Any, data: list[Any], **_: Any) -> None:
    n = len(data)
    for i, d in enumerate(data):
        series = charts.loss_series(d.steps, d.epochs)
        ax.plot(*series["batch loss"], "-", lw=0.7, alpha=0.8, color=_color(i, n, "C0"),
                label=_label(d.label, "mini-batch loss"))  # fmt: skip
        ax.plot(*series["train loss"], "o", ms=4, color=_color(i, n, "C3"),
                label=_label(d.label, "train loss (epoch end)"))  # fmt: skip
        ax.plot(*series["val loss"], "s", ms=4, mfc="none", color=_color(i, n, "C2"),
                label=_label(d.label, "validation loss"))  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")


_DRAW = {"slices": _slices, "barriers": _barriers, "alignment": _alignment,
         "cosine": _cosine, "loss": _loss}  # fmt: skip


def build_figure(figure: str, data: list[Any], metric: str = "subspace") -> Any:
    """A matplotlib Figure (not attached to pyplot) with one axes drawing ``figure``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    _DRAW[figure](ax, data, metric=metric)
    if ax.get_legend() is None:
        ax.legend(fontsize=8, frameon=False)
    ax.spines[["top"]].set_visible(False)
    return fig


def render_mpl(figure: str, fmt: str, data: list[Any], metric: str = "subspace") -> bytes:
    """png (200 dpi) or pdf (vector, with no creation date so identical runs give identical files)."""
    fig = build_figure(figure, data, metric)
    buf = io.BytesIO()
    meta = {"CreationDate": None} if fmt == "pdf" else {"Software": "sgdwalk"}
    fig.savefig(buf, format=fmt, dpi=200, metadata=meta)
    return buf.getvalue()

"""One-line summaries of records, the same words wherever a line is shown: the dashboard's event
log and the headless progress log."""

from __future__ import annotations

from sgdwalk.records import CurvatureMeasured


def curvature_line(rec: CurvatureMeasured) -> str:
    """A curvature pass: λ1, its cost (a gap in training) and the subspace alignment per batch
    size, e.g. ``step 24: curvature pass, λ1 2.5 (64 products, 92 s) b100=0.57 b1000=0.69``."""
    top = f"{rec.eigenvalues[0]:.4g}" if rec.eigenvalues else "n/a"
    took = f", {rec.seconds:.0f} s" if rec.seconds is not None else ""
    align = " ".join(f"b{a.batch_size}={a.subspace_mean:.2f}" for a in rec.alignment)
    return f"step {rec.step}: curvature pass, λ1 {top} ({rec.hvps} products{took}) {align}".rstrip()

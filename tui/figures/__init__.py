"""The figures: each declared once (``base.Figure``) and drawn by the dashboard and by export.

``FIGURES`` is the table every consumer reads, in the order the dashboard and ``--figure all``
use. A new figure is a module with a ``FIGURE`` and one line here.
"""

from sgdwalk.tui.figures import (
    alignment,
    barriers,
    cosine,
    decomposition,
    density,
    layers,
    loss,
    sharpness,
    slices,
)
from sgdwalk.tui.figures.base import Figure, FigureData, Live, Needs, Options

FIGURES: dict[str, Figure] = {
    m.FIGURE.name: m.FIGURE
    for m in (slices, barriers, loss, cosine, alignment, sharpness, decomposition, layers, density)
}

__all__ = ["FIGURES", "Figure", "FigureData", "Live", "Needs", "Options"]

"""The converged page's figure per task: each method's mean validation curve over its final seeds.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state) at a fixed size and dpi, with
the PNG's ``Software`` chunk dropped, so the same runs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from ..paper.tables import display_name
from .protocol import METHODS
from .results import TaskResults
from .tables import FOCUS

__all__ = ["DPI", "SIZE", "curves_png"]

DPI = 100
SIZE = (7.5, 4.2)  # inches


def curves_png(task: TaskResults, target: float | None, path: Path) -> Path | None:
    """Draw the mean validation headline metric vs step of every method with final records (``n`` seeds in the
    legend), and a dotted line at ``target`` (95 % of LoRA's final) when given; ``None`` (nothing written) when
    no method has a final record."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = {method: task.mean_curve(method) for method in METHODS}
    if not any(steps for steps, _ in curves.values()):
        return None
    figure = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    palette = colormaps["tab10"]
    for index, (method, (steps, values)) in enumerate(curves.items()):
        if steps:
            seeds = len(task.records(method))
            width = 2.2 if method == FOCUS else 1.2
            label = f"{display_name(method)} (n={seeds})"
            axes.plot(steps, values, color=palette(index), linewidth=width, marker="o", markersize=3, label=label)
    if target is not None:
        axes.axhline(target, color="#555555", linestyle=":", linewidth=1, label="95 % of LoRA's final")
    protocol = task.protocol
    direction = "higher" if protocol.higher_is_better else "lower"
    axes.set_xlabel("training step")
    axes.set_ylabel(f"validation {protocol.metric} ({direction} is better)")
    axes.set_title(f"{protocol.label}: mean validation {protocol.metric} over the final seeds")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path

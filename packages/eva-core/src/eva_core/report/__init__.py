"""A visual report of a fitted :class:`~eva_core.EvaState`: per-layer ranks, explained-variance spectra
and convergence per step, as PNG files and one self-contained HTML page (``eva report``).

Needs matplotlib: ``pip install 'eva-core[report]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .figures import Chart, ConvergenceCurve, MissingExtraError, charts, convergence_curve
from .page import render_page

if TYPE_CHECKING:
    from ..state import EvaState

__all__ = [
    "PAGE",
    "Chart",
    "ConvergenceCurve",
    "MissingExtraError",
    "charts",
    "convergence_curve",
    "render_page",
    "write_report",
]

PAGE = "report.html"


def write_report(state: EvaState, out: str | os.PathLike[str], title: str = "EVA report") -> Path:
    """Write ``<out>/ranks.png``, ``spectra.png``, ``convergence.png`` and ``report.html`` (which embeds
    the same PNGs, so it can be moved alone); returns the page's path.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    folder = Path(out)
    drawn = charts(state)
    folder.mkdir(parents=True, exist_ok=True)
    for chart in drawn:
        (folder / f"{chart.name}.png").write_bytes(chart.png)
    page = folder / PAGE
    page.write_text(render_page(state, drawn, title), encoding="utf-8")
    return page

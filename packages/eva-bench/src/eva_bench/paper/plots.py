"""The paper-style PNGs of ``benchmarks/report.py``, one task at a time: the held-out metric curves of every
method, EVA's rank per layer and EVA's explained-variance spectra.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, so no global figure to close), at 110 dpi,
without the ``Software`` PNG chunk, so the same runs give the same bytes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .tables import FOCUS, TaskRuns, display_name, lower_is_better

__all__ = ["curves_png", "eva_ranks_png", "focus_run", "short_names", "spectra_png"]

_DPI = 110
_MAX_TICKS = 90  # rank-chart labels that fit 16 inches


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # a script: say what to install
        raise SystemExit("benchmarks/report.py draws its figures with matplotlib: `pip install matplotlib`") from error
    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def focus_run(task: TaskRuns, seeds: Sequence[int], method: str = FOCUS) -> Mapping[str, Any] | None:
    """The run of ``method`` with the lowest cached seed among ``seeds``, or ``None``."""
    return next((task.runs[k] for s in sorted(seeds) if (k := f"{method}/seed{s}") in task.runs), None)


def short_names(names: Sequence[str]) -> list[str]:
    """Layer names without their common dotted prefix (``a.b.layer.0.q``, ``a.b.layer.1.q`` -> ``0.q``, ``1.q``)."""
    if len(names) < 2:
        return list(names)
    parts = [name.split(".") for name in names]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    prefix = ".".join(parts[0][:shared]) + "." if shared else ""
    return [name[len(prefix) :] or name for name in names]


def curves_png(task: TaskRuns, methods: Sequence[str], seeds: Sequence[int], path: Path) -> Path | None:
    """The headline metric vs step per method: mean over seeds, shaded ± std; ``None`` without runs."""
    metric = task.metric
    if metric is None:
        return None
    figure = _figure(7.5, 4.2)
    axes = figure.add_subplot()
    colors = _palette(len(methods))
    for color, method in zip(colors, methods, strict=True):
        runs = task.chosen([method], seeds)
        if not runs:
            continue
        steps = [int(point["step"]) for point in runs[0]["curve"]]
        runs = [r for r in runs if [int(p["step"]) for p in r["curve"]] == steps]
        values = [[float(p["metrics"][metric]) for p in r["curve"]] for r in runs]  # (seeds, steps)
        means = [statistics.mean(column) for column in zip(*values, strict=True)]
        stds = [statistics.stdev(column) if len(column) > 1 else 0.0 for column in zip(*values, strict=True)]
        focus = method.startswith(FOCUS)
        axes.plot(
            steps, means, color=color, linewidth=2.0 if focus else 1.2, label=f"{display_name(method)} (n={len(runs)})"
        )
        low, high = [m - s for m, s in zip(means, stds, strict=True)], [m + s for m, s in zip(means, stds, strict=True)]
        axes.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
    axes.set_xlabel("training step")
    axes.set_ylabel(f"held-out {metric} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
    axes.set_title(f"{task.label}: {metric} during fine-tuning (mean ± std over seeds)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return _save(figure, path)


def _palette(count: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if count > 10 else "tab10"]
    return [cmap(index % cmap.N) for index in range(count)]


def eva_ranks_png(task: TaskRuns, seeds: Sequence[int], path: Path) -> Path | None:
    """EVA's rank per layer (lowest cached seed; ``extra["ranks"]``, or ``"eva_ranks"`` in older stores) with
    a dashed line at the uniform rank; ``None`` when no EVA run recorded its ranks."""
    run = focus_run(task, seeds)
    extra = (run or {}).get("extra") or {}
    ranks: Mapping[str, int] = extra.get("ranks") or extra.get("eva_ranks") or {}
    if not ranks:
        return None
    names = list(ranks)
    uniform = task.meta.get("settings", {}).get("rank") or round(statistics.mean(ranks.values()))
    figure = _figure(min(16.0, max(6.0, 0.16 * len(names) + 2.0)), 4.0)
    axes = figure.add_subplot()
    axes.bar(range(len(names)), [ranks[n] for n in names], color="#2b7bba")
    axes.axhline(uniform, color="#555555", linestyle="--", linewidth=1, label=f"uniform r = {uniform}")
    every = math.ceil(len(names) / _MAX_TICKS)  # one label in `every` when the layers do not fit
    labels = short_names(names)[::every]
    axes.set_xticks(range(0, len(names), every), labels, rotation=90, fontsize=6)
    axes.margins(x=0.005)
    axes.set_ylabel("LoRA rank")
    axes.set_title(
        f"{task.label}: EVA's rank per layer (seed {run['seed'] if run else '?'}, {sum(ranks.values())} in all)"
    )
    axes.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


def spectra_png(task: TaskRuns, seeds: Sequence[int], path: Path) -> Path | None:
    """EVA's explained-variance ratio vs component per layer (``extra["explained_variance"]``, lowest cached
    seed), one thin line per layer on a log axis; ``None`` when the run did not record it."""
    import matplotlib

    run = focus_run(task, seeds)
    spectra: Mapping[str, Sequence[float]] = ((run or {}).get("extra") or {}).get("explained_variance") or {}
    if not spectra:
        return None
    figure = _figure(7.0, 4.2)
    axes = figure.add_subplot()
    cmap = matplotlib.colormaps["viridis"]
    for index, (_, ratios) in enumerate(spectra.items()):
        points = [(i + 1, float(v)) for i, v in enumerate(ratios) if float(v) > 0]  # log axis: positive only
        if points:
            components, values = zip(*points, strict=True)
            axes.plot(components, values, color=cmap(index / max(len(spectra) - 1, 1)), linewidth=0.8)
    axes.set_yscale("log")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_xlabel("component")
    axes.set_ylabel("explained variance ratio")
    axes.set_title(f"{task.label}: input spectra of {len(spectra)} layers (early dark, late light)")
    return _save(figure, path)

"""The report's charts, drawn with matplotlib's object API (no pyplot, no global state) into PNG bytes.

Needs the ``report`` extra: ``pip install eva-core[report]``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import EvaError

if TYPE_CHECKING:
    from ..state import EvaState

__all__ = ["Chart", "ConvergenceCurve", "MissingExtraError", "charts", "convergence_curve"]

_CONVERGED, _OPEN = "#2b7bba", "#e08a2c"


class MissingExtraError(EvaError, ImportError):
    """An optional dependency of a feature is not installed; the message names the pip extra."""


@dataclass(frozen=True)
class Chart:
    """One PNG chart: ``name`` (its file stem and HTML id), a caption and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class ConvergenceCurve:
    """Converged layers after each batch: ``steps[i]`` batches consumed, ``converged[i]`` layers done.

    ``source`` says what the state held: ``"history"`` (a per-step record in ``state.extra``) or
    ``"converged_at"`` (rebuilt from each layer's ``converged_at``: a layer counts from the batch at
    which it last converged).
    """

    steps: tuple[int, ...]
    converged: tuple[int, ...]
    layers: int
    source: str


def convergence_curve(state: EvaState) -> ConvergenceCurve:
    """The number of converged layers per batch, from ``state.extra["history"]`` when the fit recorded
    one (items ``{"step": int, "converged": int}``), else from each layer's ``converged_at``."""
    layers = len(state.layers)
    history = state.extra.get("history")
    if isinstance(history, list) and history and all(isinstance(h, dict) for h in history):
        steps = tuple(int(h["step"]) for h in history)
        return ConvergenceCurve(steps, tuple(int(h["converged"]) for h in history), layers, "history")
    at = [layer.converged_at for layer in state.layers.values()]
    steps = tuple(range(1, max(state.steps, 1) + 1))
    converged = tuple(sum(1 for a in at if a is not None and a <= step) for step in steps)
    return ConvergenceCurve(steps, converged, layers, "converged_at")


def charts(state: EvaState) -> list[Chart]:
    """The rank chart, the explained-variance spectra and the convergence curve of ``state``.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingExtraError(
            "eva report draws its charts with matplotlib, which is not installed; run `pip install 'eva-core[report]'`."
        ) from error
    return [_ranks(Figure, state), _spectra(Figure, state), _convergence(Figure, state)]


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _short(name: str) -> str:
    return name if len(name) <= 32 else "..." + name[-29:]


def _ranks(figure_type: Any, state: EvaState) -> Chart:
    names = list(state.ranks)
    ranks = [state.ranks[name] for name in names]
    colors = [_CONVERGED if state.layers[name].converged else _OPEN for name in names]
    figure = figure_type(figsize=(max(6.0, 0.28 * len(names) + 2.0), 4.2))
    axes = figure.add_subplot()
    axes.bar(range(len(names)), ranks, color=colors)
    axes.axhline(state.config.rank, color="#555555", linestyle="--", linewidth=1, label=f"mean r = {state.config.rank}")
    axes.axhline(state.config.max_components, color="#aa3333", linestyle=":", linewidth=1, label="cap round(rho*r)")
    axes.set_xticks(range(len(names)), [_short(name) for name in names], rotation=90, fontsize=7)
    axes.set_ylabel("LoRA rank")
    axes.set_title("Rank per layer (blue: converged, orange: not converged)")
    axes.legend(loc="upper right", fontsize=8)
    caption = (
        f"{len(names)} layers share a budget of {sum(ranks)} ranks (r = {state.config.rank} per layer on "
        f"average, at most {state.config.max_components} per layer)."
    )
    return Chart("ranks", "Ranks per layer", caption, _png(figure))


def _spectra(figure_type: Any, state: EvaState) -> Chart:
    import matplotlib

    leaders = [name for name, layer in state.layers.items() if layer.source == name and layer.components.shape[0]]
    cmap = matplotlib.colormaps["viridis"]
    figure = figure_type(figsize=(11.0, 4.2))
    ratio_axes, total_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, name in enumerate(leaders):
        layer = state.layers[name]
        color = cmap(index / max(len(leaders) - 1, 1))
        ratio = layer.explained_variance_ratio.float().cpu()
        components = range(1, ratio.shape[0] + 1)
        ratio_axes.plot(components, ratio.tolist(), color=color, linewidth=1, marker=".", markersize=3)
        rank = state.ranks[name]
        if rank:
            ratio_axes.plot([rank], [float(ratio[rank - 1])], marker="o", color=color, markersize=5)
    ratio_axes.set_yscale("log")
    ratio_axes.xaxis.get_major_locator().set_params(integer=True)
    ratio_axes.set_xlabel("component")
    ratio_axes.set_ylabel("explained variance ratio")
    ratio_axes.set_title("Spectra (a dot marks each layer's rank)")
    captured = [float(state.layers[n].explained_variance_ratio[: state.ranks[n]].sum()) for n in state.ranks]
    total_axes.bar(range(len(captured)), captured, color="#2b7bba")
    total_axes.set_ylim(0, 1)
    total_axes.set_xlabel("layer (model order)")
    total_axes.set_ylabel("variance captured by its rank")
    total_axes.set_title("Share of input variance in the adapter's subspace")
    caption = (
        f"Explained variance ratio of the first {state.config.max_components} components of each measured input "
        f"({len(leaders)} inputs; layers sharing one input share its spectrum), early layers dark, late layers light."
    )
    return Chart("spectra", "Explained-variance spectra", caption, _png(figure))


def _convergence(figure_type: Any, state: EvaState) -> Chart:
    curve = convergence_curve(state)
    figure = figure_type(figsize=(7.0, 3.8))
    axes = figure.add_subplot()
    axes.step(curve.steps, curve.converged, where="post", color=_CONVERGED)
    axes.axhline(curve.layers, color="#555555", linestyle="--", linewidth=1, label=f"{curve.layers} layers")
    axes.set_ylim(0, max(curve.layers, 1) * 1.05)
    axes.set_xlabel("batches consumed")
    axes.set_ylabel("layers converged")
    axes.set_title(f"Convergence (tau = {state.config.tau})")
    axes.legend(loc="lower right", fontsize=8)
    if curve.source == "history":
        caption = "Converged layers after each convergence check, as recorded during the fit."
    else:
        caption = (
            "Rebuilt from each layer's converged_at (the batch at which its components last stopped moving): "
            "the state stores no per-step history, so layers that converged and later reopened are not shown."
        )
    return Chart("convergence", "Convergence per step", caption, _png(figure))

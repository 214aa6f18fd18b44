"""A visual report of a fitted :class:`~eva_core.EvaState` (``eva-lora report``): per-layer ranks, explained-variance
spectra and convergence per step as PNG charts drawn with matplotlib's object API (no pyplot, no global
state), and one self-contained HTML page (CSS inline, the charts as base64 ``data:`` PNGs).

Needs matplotlib: ``pip install 'eva-core[report]'``.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingExtraError

if TYPE_CHECKING:
    from .state import EvaState

__all__ = ["PAGE", "Chart", "ConvergenceCurve", "charts", "convergence_curve", "render_page", "write_report"]

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


_CONVERGED, _OPEN = "#2b7bba", "#e08a2c"


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
            "eva-lora report draws its charts with matplotlib, which is not installed; "
            "run `pip install 'eva-core[report]'`."
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
    axes.set_title(f"Convergence ({state.config.stopping})")
    axes.legend(loc="lower right", fontsize=8)
    if curve.source == "history":
        caption = "Converged layers after each convergence check, as recorded during the fit."
    else:
        caption = (
            "Rebuilt from each layer's converged_at (the batch at which its components last stopped moving): "
            "the state stores no per-step history, so layers that converged and later reopened are not shown."
        )
    return Chart("convergence", "Convergence per step", caption, _png(figure))


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; font-family: ui-monospace, monospace; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85rem; } .broken { color: #a00; font-weight: bold; }
"""

# Marks each chart loaded or broken once the page has loaded (a broken one gets a visible notice).
_SCRIPT = """
window.addEventListener("load", function () {
  document.querySelectorAll("figure img").forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-loaded", ok ? "true" : "false");
    if (!ok) {
      var note = document.createElement("p");
      note.className = "broken";
      note.textContent = "This chart failed to load: " + img.alt;
      img.after(note);
    }
  });
});
"""


def render_page(state: EvaState, charts: Sequence[Chart], title: str) -> str:
    """The HTML of the report: a summary, each chart (``<img id="<name>-chart">``) and a layer table."""
    config = state.config
    converged = len(state.layers) - len(state.not_converged)
    summary = [
        ("batches", str(state.steps)),
        ("seconds", f"{state.seconds:.1f}"),
        ("domain", str(state.extra.get("domain", config.domain))),
        ("rank r / rho", f"{config.rank} / {config.rho}"),
        ("stopping rule", config.stopping),
        ("layers", f"{len(state.layers)} ({converged} converged)"),
        ("rank budget", f"{sum(state.ranks.values())}"),
    ]
    cli = state.extra.get("cli")
    if isinstance(cli, dict):
        summary += [("model", str(cli.get("model"))), ("data", str(cli.get("data")))]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<table id="summary">',
        *(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary),
        "</table>",
    ]
    for chart in charts:
        data = base64.b64encode(chart.png).decode("ascii")
        parts += [
            f'<h2 id="{chart.name}">{html.escape(chart.title)}</h2>',
            f'<figure><img id="{chart.name}-chart" alt="{html.escape(chart.title)}"',
            f'src="data:image/png;base64,{data}">',
            f"<figcaption>{html.escape(chart.caption)}</figcaption></figure>",
        ]
    parts += ["<h2>Layers</h2>", _layer_table(state), f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _layer_table(state: EvaState) -> str:
    head = "<tr><th>layer</th><th>rank</th><th>components kept</th><th>variance captured</th><th>rows</th>"
    head += "<th>converged at batch</th><th>input measured at</th></tr>"
    body = []
    for name, rank in state.ranks.items():
        layer = state.layers[name]
        captured = float(layer.explained_variance_ratio[:rank].sum()) if rank else 0.0
        at = "-" if layer.converged_at is None else str(layer.converged_at)
        source = "" if layer.source == name else html.escape(layer.source)
        body.append(
            f"<tr><td>{html.escape(name)}</td><td>{rank}</td><td>{layer.components.shape[0]}</td>"
            f"<td>{captured:.1%}</td><td>{layer.rows}</td><td>{at}</td><td>{source}</td></tr>"
        )
    return '<table id="layers">' + head + "".join(body) + "</table>"

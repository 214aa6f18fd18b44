"""The report page: one self-contained HTML file (CSS inline, charts as base64 ``data:`` PNGs)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..state import EvaState
    from .figures import Chart

__all__ = ["render_page"]

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
        ("rank r / rho / tau", f"{config.rank} / {config.rho} / {config.tau}"),
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

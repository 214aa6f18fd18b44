"""Which renderer makes which results page from which committed records.

Every markdown page under ``docs/results/`` is made by a renderer registered here from the records committed
beside it, so a test can re-render every page and fail on any difference or on a page nobody renders. A
renderer takes the repository root and returns ``{page path relative to the root: its text}``; a value of
``None`` names a binary figure whose existence is checked but whose bytes are not compared (matplotlib's PNGs
need not be byte-stable across its versions). Renderers read no clock and no machine state; two read more
than the record: the paper's nlu table counts seeds above the majority class of the dev rows the runs were
scored on (read from the shared data folder, as the runs read them), and the scale pages set today's
``eva_core.plan`` against the recorded measurements (a planner change shows up as a stale page).

Prose pages (:data:`PROSE`) are written by hand, but each of their tables sits between marker comments and is
re-rendered from a record by a :data:`TABLES` renderer::

    <!-- table: adapter_scale -->
    | model | layer | ... |
    <!-- /table -->

A hand-written table of settings (no measured number in it) says so with ``<!-- settings -->`` ...
``<!-- /settings -->`` around it. A new report registers with one entry in :data:`PAGES` (and one in
:data:`TABLES` per table it embeds in a prose page), as the converged report does.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import comparison
from .engine import benchmark, calibration, plan_table, scale, sketch_accuracy, stopping
from .llm import scale as llm_scale
from .paper import report

__all__ = [
    "PAGES",
    "PROSE",
    "TABLES",
    "embedded_tables",
    "problems",
    "refresh_table",
    "render_pages",
    "results_pages",
]

Renderer = Callable[[Path], Mapping[str, "str | None"]]
TableRenderer = Callable[[Path], str]

RESULTS = Path("docs") / "results"
PROSE: tuple[str, ...] = ("docs/results/README.md", "docs/benchmarks.md")
"""Hand-written pages whose tables are embedded from records (checked block by block)."""
_COMPARE = "benchmarks/compare.py"
_BLOCK = re.compile(r"<!-- (table|settings)(?:: ([\w-]+))? -->\n(.*?)\n<!-- /\1 -->", re.DOTALL)


def _json(root: Path, name: str) -> Any:
    return json.loads((root / RESULTS / name).read_text())


def _comparison_pages(root: Path) -> dict[str, str | None]:
    """Every ``compare.py`` store under ``docs/results`` (``{"meta", "runs"}``, its meta's command that script)
    -> its ``<stem>.md``."""
    pages: dict[str, str | None] = {}
    for store in sorted((root / RESULTS).rglob("*.json")):
        loaded = json.loads(store.read_text())
        if isinstance(loaded, dict) and _COMPARE in str(loaded.get("meta", {}).get("command", "")).split(" ")[:2]:
            pages[store.with_suffix(".md").relative_to(root).as_posix()] = comparison.page(loaded)
    return pages


def _rendered_into(folder: str, render: Callable[[Path], object]) -> dict[str, str | None]:
    """``render(target)`` into a temporary folder, read back as the pages of ``docs/results/<folder>``: each
    markdown page's text, each figure ``None`` (existence only)."""
    with tempfile.TemporaryDirectory(prefix="eva-pages-") as temporary:
        target = Path(temporary)
        render(target)
        return {
            (RESULTS / folder / file.name).as_posix(): file.read_text() if file.suffix == ".md" else None
            for file in sorted(target.iterdir())
        }


def _paper_pages(root: Path) -> dict[str, str | None]:
    """``benchmarks/report.py --render-only`` of the stores in ``docs/results/paper``: the domain pages and
    the index (compared), the figures (existence only)."""
    return _rendered_into(
        "paper", lambda target: report.render(report.parse(["--render-only"]), root / RESULTS / "paper", target)
    )


_ENGINE: dict[str, Callable[[Any], str]] = {
    "engine": benchmark.page,
    "sketch": lambda records: sketch_accuracy.report(records) + "\n",
    "stopping": stopping.page,
    "scale_block": scale.page,
    "scale_models": scale.page,
    "adapter_scale": lambda record: llm_scale.combined_table(record) + "\n",
}
"""The benchmarks' pages: ``docs/results/<name>.md`` is the renderer of the record ``<name>.json``."""


def _engine_pages(root: Path) -> dict[str, str | None]:
    return {f"docs/results/{name}.md": render(_json(root, f"{name}.json")) for name, render in _ENGINE.items()}


def _converged_pages(root: Path) -> dict[str, str | None]:
    """``benchmarks/converged.py --render-only``: the page from the committed run files and baselines (the
    figures: existence only)."""
    from .converged import baselines, page

    folder = root / RESULTS / "converged"
    return _rendered_into(
        "converged", lambda target: page.render(folder / "runs", target, baselines.read_baselines(folder))
    )


def _converged_summary(root: Path) -> str:
    from .converged import baselines, page

    folder = root / RESULTS / "converged"
    return page.summary(folder / "runs", baselines.read_baselines(folder))


PAGES: dict[str, Renderer] = {
    "comparison": _comparison_pages,
    "paper": _paper_pages,
    "benchmarks": _engine_pages,
    "converged": _converged_pages,
}
"""Renderer name -> renderer (root -> {page path: text, or ``None`` for a figure})."""


@functools.lru_cache(maxsize=8)
def _plan_check(path: Path) -> str:
    """The planner's predictions against the scale record at ``path`` (building each subject on the meta
    device takes seconds, and the page and a prose table both show it)."""
    return plan_table.check_report(json.loads(path.read_text())["records"])


def _table(record: str, render: Callable[[Any], str]) -> TableRenderer:
    """A table renderer: ``render`` of the committed record ``docs/results/<record>``."""
    return lambda root: render(_json(root, record))


TABLES: dict[str, TableRenderer] = {
    "engine": _table("engine.json", lambda record: benchmark.table(record["rows"])),
    "stopping_results": _table("stopping.json", lambda record: calibration.results_table(record["records"])),
    "stopping_calibration": _table("stopping.json", lambda record: calibration.calibration_table(record["records"])),
    "stopping_pool": _table("stopping.json", lambda record: calibration.pool_table(record["records"])),
    "sketch": _table("sketch.json", sketch_accuracy.report),
    "scale_block": _table("scale_block.json", lambda record: scale.report(record["records"])),
    "scale_models": _table("scale_models.json", lambda record: scale.report(record["records"])),
    "scale_block_plan_check": lambda root: _plan_check(root / RESULTS / "scale_block.json"),
    "scale_models_plan_check": lambda root: _plan_check(root / RESULTS / "scale_models.json"),
    "planner": _table("scale_block.json", lambda record: plan_table.plan_report(record["plan"])),
    "adapter_scale": _table("adapter_scale.json", llm_scale.combined_table),
    "converged": _converged_summary,
}
"""Table name (the marker's) -> renderer (root -> the markdown table, from a committed record)."""


def render_pages(root: Path) -> dict[str, str | None]:
    """Every registered page of the repository at ``root``: path -> text (``None``: a figure)."""
    rendered: dict[str, str | None] = {}
    for renderer in PAGES.values():
        rendered.update(renderer(root))
    return rendered


def results_pages(root: Path) -> list[str]:
    """Every markdown page under ``docs/results`` (paths relative to ``root``), the prose pages excepted."""
    found = sorted(path.relative_to(root).as_posix() for path in (root / RESULTS).rglob("*.md"))
    return [path for path in found if path not in PROSE]


def embedded_tables(text: str) -> tuple[list[tuple[str, str]], str]:
    """The ``(name, body)`` of each table block of a prose page, and the page with every block (settings
    blocks too) removed (where no table may remain)."""
    blocks = [(match[2], match[3]) for match in _BLOCK.finditer(text) if match[1] == "table"]
    return blocks, _BLOCK.sub("", text)


def refresh_table(root: Path, page: str, name: str) -> bool:
    """Re-render the table block ``name`` of the prose page ``page`` (relative to ``root``) from its record, in
    place; returns whether the page changed.

    Raises:
        KeyError: the page has no such block, or no renderer is registered under ``name``.
    """
    path = root / page
    text = path.read_text()
    bodies = dict(embedded_tables(text)[0])
    if name not in bodies:
        raise KeyError(f"{page} has no <!-- table: {name} --> block.")
    marker = f"<!-- table: {name} -->\n"
    updated = text.replace(f"{marker}{bodies[name]}\n", f"{marker}{TABLES[name](root).strip(chr(10))}\n", 1)
    if updated != text:
        path.write_text(updated)
    return updated != text


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _prose_problems(root: Path, page: str) -> list[str]:
    text = (root / page).read_text()
    blocks, rest = embedded_tables(text)
    found = [f"{page}: a table outside <!-- table: NAME --> blocks: {line[:60]}" for line in _table_lines(rest)[:1]]
    for name, body in blocks:
        if name not in TABLES:
            found.append(f"{page}: table {name!r} has no registered renderer (eva_bench.pages.TABLES)")
        elif TABLES[name](root).strip("\n") != body.strip("\n"):
            found.append(f"{page}: table {name!r} differs from what its record renders")
    return found


def problems(root: Path, rendered: Mapping[str, str | None] | None = None) -> list[str]:
    """Every way the committed pages of ``root`` differ from what their records render: a page with no
    renderer, a rendered page or figure missing, a page whose text differs, a prose page's table that is not
    embedded from a record or differs from it. Empty when every page is its records' rendering.
    ``rendered``: :func:`render_pages` of ``root`` when already at hand."""
    rendered = render_pages(root) if rendered is None else rendered
    found = [f"{page}: no renderer in eva_bench.pages makes it" for page in results_pages(root) if page not in rendered]
    for page, text in rendered.items():
        path = root / page
        if not path.is_file():
            found.append(f"{page}: rendered from its records but not committed")
        elif text is not None and path.read_text() != text:
            found.append(f"{page}: differs from what its records render (regenerate it)")
    for page in PROSE:
        found += _prose_problems(root, page) if (root / page).is_file() else []
    return found

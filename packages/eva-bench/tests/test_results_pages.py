"""Every committed results page is what its committed records render to (:mod:`eva_bench.pages`): no table in
the results without its record, and no page edited by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eva_bench import pages

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def rendered() -> dict[str, str | None]:
    return pages.render_pages(ROOT)


def test_every_results_page_has_a_renderer(rendered: dict[str, str | None]) -> None:
    unrendered = [page for page in pages.results_pages(ROOT) if page not in rendered]
    assert not unrendered, f"pages under docs/results that no renderer in eva_bench.pages makes: {unrendered}"


def test_every_page_is_what_its_records_render_to(rendered: dict[str, str | None]) -> None:
    found = pages.problems(ROOT, rendered)
    assert not found, "\n".join(found)


def test_prose_tables_are_embedded_from_records() -> None:
    """The README's and benchmarks.md's tables sit in table blocks (or settings blocks for hand-written
    settings), and the adapter-scale and engine tables among them."""
    names = {page: [name for name, _ in pages.embedded_tables((ROOT / page).read_text())[0]] for page in pages.PROSE}
    assert "adapter_scale" in names["docs/results/README.md"]
    assert "engine" in names["docs/benchmarks.md"]


def _copy(tmp_path: Path, *names: str) -> Path:
    """A repository root under ``tmp_path`` holding ``docs/results/<name>`` of each name and the prose pages
    emptied (so only the copied pages are checked)."""
    for name in names:
        (tmp_path / "docs" / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "docs" / "results" / name, tmp_path / "docs" / "results" / name)
    for page in pages.PROSE:
        (tmp_path / page).write_text("# prose\n")
    return tmp_path


def _only_sketch(root: Path) -> dict[str, str | None]:
    from eva_bench.engine import sketch_accuracy

    return {"docs/results/sketch.md": sketch_accuracy.report(pages._json(root, "sketch.json")) + "\n"}


def test_a_page_edited_by_hand_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(tmp_path, "sketch.json", "sketch.md")
    monkeypatch.setattr(pages, "PAGES", {"sketch": _only_sketch})
    assert pages.problems(root) == []
    page = root / "docs" / "results" / "sketch.md"
    page.write_text(page.read_text().replace("0.9980", "0.9981", 1))
    assert pages.problems(root) == ["docs/results/sketch.md: differs from what its records render (regenerate it)"]


def test_a_page_without_a_renderer_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(tmp_path, "sketch.json", "sketch.md")
    monkeypatch.setattr(pages, "PAGES", {"sketch": _only_sketch})
    (root / "docs" / "results" / "converged").mkdir()
    (root / "docs" / "results" / "converged" / "nlu.md").write_text("| method | F1 |\n|---|---|\n| EVA | 0.9 |\n")
    assert pages.problems(root) == ["docs/results/converged/nlu.md: no renderer in eva_bench.pages makes it"]


def test_a_prose_table_outside_a_block_or_unlike_its_record_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(tmp_path, "sketch.json", "sketch.md")
    monkeypatch.setattr(pages, "PAGES", {"sketch": _only_sketch})
    monkeypatch.setattr(pages, "TABLES", {"sketch": lambda root: _only_sketch(root)["docs/results/sketch.md"]})
    table = (root / "docs" / "results" / "sketch.md").read_text().strip("\n")
    readme = root / "docs" / "results" / "README.md"
    settings = "<!-- settings -->\n| model | steps |\n|---|---|\n| MiniLM | 50 |\n<!-- /settings -->"
    readme.write_text(f"# prose\n\n<!-- table: sketch -->\n{table}\n<!-- /table -->\n\n{settings}\n")
    assert pages.problems(root) == []
    readme.write_text(f"# prose\n\n<!-- table: sketch -->\n{table.replace('0.9980', '0.99')}\n<!-- /table -->\n")
    assert pages.problems(root) == ["docs/results/README.md: table 'sketch' differs from what its record renders"]
    readme.write_text(f"# prose\n\n{table}\n")
    assert pages.problems(root)[0].startswith("docs/results/README.md: a table outside")


def test_refresh_table_rewrites_only_its_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``benchmarks/converged.py --render-only`` does to the results index: the named block is re-rendered
    in place, the prose and other blocks around it are kept."""
    readme = tmp_path / "docs" / "results" / "README.md"
    readme.parent.mkdir(parents=True)
    other = "\n\ntext\n\n<!-- table: b -->\n| b |\n<!-- /table -->\n"
    readme.write_text("# prose\n\n<!-- table: a -->\n| old |\n<!-- /table -->" + other)
    monkeypatch.setattr(pages, "TABLES", {"a": lambda root: "| new |\n|---|\n", "b": lambda root: "| b |"})
    assert pages.refresh_table(tmp_path, "docs/results/README.md", "a")
    assert readme.read_text() == "# prose\n\n<!-- table: a -->\n| new |\n|---|\n<!-- /table -->" + other
    assert not pages.refresh_table(tmp_path, "docs/results/README.md", "a")
    with pytest.raises(KeyError, match="no <!-- table: c --> block"):
        pages.refresh_table(tmp_path, "docs/results/README.md", "c")

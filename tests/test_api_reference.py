"""Every public name has a place in the API reference (``docs/api/``): a new name in a published package's
``__all__``, in one of the submodules the docs tell users to import, or a new plugin hook, fails here until
its page lists it. That a listed name renders is checked by the ``docs`` nox session (``mkdocs build
--strict`` with the hook in ``docs/api/_reference.py``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest requires tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "docs" / "api"
HARNESS = "eva-bench"
PUBLISHED = sorted(
    tomllib.loads(p.read_text())["project"]["name"].replace("-", "_")
    for p in (ROOT / "packages").glob("*/pyproject.toml")
    if p.parent.name != HARNESS
)
SUBMODULES = ("eva_core.errors", "eva_core.hookspecs", "eva_core.testing")
"""The submodules the docs and READMEs tell users to import: every error class, the plugin contract, and the
contract tests a domain package subclasses."""


def _listed() -> dict[str, list[str]]:
    spec = importlib.util.spec_from_file_location("_reference", API_DIR / "_reference.py")
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    return reference.listed(API_DIR)


def _public_names(module: ModuleType) -> list[str]:
    """``__all__``, plus the hook specifications of the plugin contract (not exported, but what a plugin
    implements)."""
    names = list(module.__all__)
    if module.__name__ == "eva_core.hookspecs":
        names += [name for name in vars(module) if name.startswith("eva_") and callable(getattr(module, name))]
    return names


def _paths(module: ModuleType, name: str) -> set[str]:
    """The identifiers that document ``module.name``: its public path, or its defining module's path (for a
    name that is also a submodule's name, such as ``eva_nlu.batches``)."""
    obj = getattr(module, name)
    paths = {f"{module.__name__}.{name}"}
    if isinstance(getattr(obj, "__module__", None), str) and isinstance(getattr(obj, "__qualname__", None), str):
        paths.add(f"{obj.__module__}.{obj.__qualname__}")
    return paths


def test_the_reference_is_read() -> None:
    listed = _listed()
    assert "eva_core.fit" in listed["eva_core.md"] and "eva_core.errors.EvaError" in listed["eva_core.errors.md"]
    assert {"eva_core", "eva_llm", "eva_nlu", "eva_rl", "eva_vision"} <= set(PUBLISHED), PUBLISHED


@pytest.mark.parametrize("module_name", [*PUBLISHED, *SUBMODULES])
def test_every_public_name_is_in_the_reference(module_name: str) -> None:
    module = importlib.import_module(module_name)
    page = f"{module_name}.md"
    listed = _listed()
    assert page in listed, f"docs/api/{page} is missing: add the page and its line in the nav of mkdocs.yml"
    missing = [name for name in _public_names(module) if not _paths(module, name) & set(listed[page])]
    assert not missing, f"names of {module_name} missing from docs/api/{page} (add them to `members:`): {missing}"


def test_every_reference_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert [page for page in _listed() if f"api/{page}" not in nav] == []

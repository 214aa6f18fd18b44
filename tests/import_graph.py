"""The import graph between the modules of one package, read from the source (nothing is imported).

A node is a module (``eva_core.fitting.loop``); package ``__init__`` files are left out as nodes. An edge
``a -> b`` is an import in ``a`` (at module level, inside a function, or under ``TYPE_CHECKING``) of
module ``b`` or of a name defined in ``b``. Two counts:

- ``through_packages=True`` (strict): ``from .svd import GramStatistics`` resolves through
  ``svd/__init__.py`` to ``eva_core.svd.gram``, so re-exporting through a package hides no dependency;
- ``through_packages=False`` (issue 12's count, which found 89 edges and 9 layers before the redesign):
  only imports that name a module count (``from .svd.gram import X``, ``from . import state``); an
  import of a package's names is an import of its ``__init__``, which is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["ImportGraph"]


class ImportGraph:
    """The modules of package ``name`` under ``source`` (a ``src`` folder) and their imports of each other."""

    def __init__(self, source: Path, name: str, *, through_packages: bool = True) -> None:
        self.name = name
        self.through_packages = through_packages
        self.files: dict[str, tuple[Path, bool]] = {}  # module -> (path, is a package __init__)
        for path in (source / name).rglob("*.py"):
            parts = list(path.relative_to(source).with_suffix("").parts)
            package = parts[-1] == "__init__"
            self.files[".".join(parts[:-1] if package else parts)] = (path, package)
        self.edges = {module: self._imports(module) for module, (_, package) in self.files.items() if not package}

    @property
    def edge_count(self) -> int:
        return sum(len(targets) for targets in self.edges.values())

    def depth(self) -> int:
        """Layers of the longest import chain (a module importing nothing of the package is layer 1)."""
        memo: dict[str, int] = {}

        def layer(module: str, seen: frozenset[str]) -> int:
            if module not in memo:
                below = [layer(t, seen | {module}) for t in self.edges[module] if t not in seen]
                memo[module] = 1 + max(below, default=0)
            return memo[module]

        return max((layer(module, frozenset()) for module in self.edges), default=0)

    def cycles(self) -> list[list[str]]:
        """Import cycles, each as the chain of modules that closes it."""
        found: list[list[str]] = []
        done: set[str] = set()

        def visit(module: str, path: list[str]) -> None:
            if module in path:
                found.append([*path[path.index(module) :], module])
                return
            if module in done:
                return
            for target in sorted(self.edges[module]):
                visit(target, [*path, module])
            done.add(module)

        for module in sorted(self.edges):
            visit(module, [])
        return found

    def _imports(self, module: str) -> set[str]:
        path, package = self.files[module]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = self._absolute(module, package, node)
                for alias in node.names:
                    target = self._resolve(base, alias.name)
                    if target is not None and target != module:
                        targets.add(target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in self.files and not self.files[alias.name][1] and alias.name != module:
                        targets.add(alias.name)
        return targets

    def _absolute(self, module: str, package: bool, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        parts = module.split(".") if package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    def _resolve(self, base: str, name: str, seen: frozenset[tuple[str, str]] = frozenset()) -> str | None:
        """The module that ``from base import name`` depends on, through package re-exports."""
        if f"{base}.{name}" in self.files:
            base, name = f"{base}.{name}", ""
        if base not in self.files:
            return None
        path, package = self.files[base]
        if not package:
            return base
        if not name or (base, name) in seen or not self.through_packages:
            return None
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
                original = next(a.name for a in node.names if (a.asname or a.name) == name)
                return self._resolve(self._absolute(base, True, node), original, seen | {(base, name)})
        return None

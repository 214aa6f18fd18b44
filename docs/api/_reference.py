"""What the API reference pages (``docs/api/*.md``) promise to render, and a check that they rendered it.

Each page renders objects with mkdocstrings directives: ``::: eva_core`` followed by an indented
``members:`` list renders those names of the module (identifiers ``eva_core.fit``, ...); a directive
without ``members:`` renders that one object. ``listed`` reads those identifiers; the root test
``tests/test_api_reference.py`` checks every name in a published ``__all__`` is among them, and this
file, as an mkdocs hook (``hooks:`` in ``mkdocs.yml``), fails the build when a listed identifier has no
anchor in the built page (an object griffe could not resolve renders as nothing, without a warning:
``eva_nlu.batches`` is both a submodule and a function, and the module's ``members:`` skips it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

API_DIR = Path(__file__).parent
_DIRECTIVE = re.compile(r"^::: *([\w.]+) *$")
_MEMBER = re.compile(r"^ {6,}- +(\w+) *$")


def listed(api_dir: Path = API_DIR) -> dict[str, list[str]]:
    """Page file name -> the identifiers its directives render, in page order."""
    pages: dict[str, list[str]] = {}
    for page in sorted(api_dir.glob("*.md")):
        identifiers: list[str] = []
        root = ""
        in_members = False
        for line in page.read_text(encoding="utf-8").splitlines():
            if match := _DIRECTIVE.match(line):
                root, in_members = match[1], False
                identifiers.append(root)
            elif root and line.strip() == "members:":
                in_members = True
            elif in_members and (match := _MEMBER.match(line)):
                identifiers.append(f"{root}.{match[1]}")
            elif not line.startswith("    "):
                root, in_members = "", False
        pages[page.name] = identifiers
    return pages


def on_post_build(config: Any, **_: Any) -> None:
    """Fail the build when a listed identifier has no ``id="..."`` anchor in its built page."""
    from mkdocs.exceptions import PluginError

    site = Path(config["site_dir"])
    missing = []
    for page, identifiers in listed().items():
        html = (site / "api" / page.removesuffix(".md") / "index.html").read_text(encoding="utf-8")
        missing += [f"{page}: {name}" for name in identifiers if f'id="{name}"' not in html]
    if missing:
        raise PluginError(
            "the API reference lists objects that rendered nothing (check the identifier, or render the object "
            f"by its full path): {missing}"
        )

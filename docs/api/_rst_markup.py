"""A griffe extension (``extensions:`` in ``mkdocs.yml``) that reads the packages' reStructuredText markup as
Markdown: the docstrings cross-reference with Sphinx roles (``:class:`EvaState```, ``:func:`~eva_core.fit```)
and introduce literal blocks with ``::``, which Markdown would show verbatim. A role becomes inline code of
its target (the last dotted part for ``~``); a paragraph ending in ``::`` ends in ``:`` (the indented block
after it is already a Markdown code block). The sources keep their markup: this runs only on the docs build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_BLOCK = re.compile(r"(\S)::$", re.MULTILINE)


def markdown(text: str) -> str:
    """``text`` with Sphinx roles as inline code and ``::`` paragraph ends as ``:``."""
    text = _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)
    return _LITERAL_BLOCK.sub(r"\1:", text)


class RstMarkup(griffe.Extension):
    """Rewrites every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **_: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

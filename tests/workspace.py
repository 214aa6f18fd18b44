"""The repository as the root tests read it: its root folder, the published packages and their pyproject files."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest requires tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ("eva-core", "eva-llm", "eva-nlu", "eva-rl", "eva-vision")
"""The packages released to the index (``eva-bench``, the harness, never is)."""


def pyproject(package: str) -> dict:
    """The parsed ``packages/<package>/pyproject.toml``."""
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())

"""Where eva keeps what it builds once and reuses (converted checkpoints, models and datasets made for
the command line): one lookup every domain package shares."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "EVA_CACHE_DIR"
"""Folder of everything eva builds once and reuses; default ``~/.cache/eva``."""


def cache_dir(name: str | None = None) -> Path:
    """``$EVA_CACHE_DIR`` (default ``~/.cache/eva``), or its subfolder ``name``; nothing is created here."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "eva"
    return root / name if name else root

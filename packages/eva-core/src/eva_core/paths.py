"""Where eva keeps what it builds (converted checkpoints, locally pretrained models, generated datasets)
and where it reads real data from: one lookup every domain package shares."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingDataError

__all__ = ["CACHE_ENV", "DATA_ENV", "cache_dir", "data_dir"]

CACHE_ENV = "EVA_CACHE_DIR"
"""Folder of everything eva builds once and reuses; default ``~/.cache/eva``."""

DATA_ENV = "EVA_DATA_DIR"
"""Folder of the real data files; default ``shared/data`` beside the repository."""


def cache_dir(name: str | None = None) -> Path:
    """``$EVA_CACHE_DIR`` (default ``~/.cache/eva``), or its subfolder ``name``; nothing is created here."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "eva"
    return root / name if name else root


def data_dir(anchor: str | os.PathLike[str] | None = None) -> Path:
    """``$EVA_DATA_DIR``, else the ``shared/data`` folder beside the repository, looked for from the
    working directory and from ``anchor`` (a source file inside the repository, e.g. a package's
    ``__file__``).

    Raises:
        MissingDataError: no such folder; the message names ``EVA_DATA_DIR``.
    """
    configured = os.environ.get(DATA_ENV)
    if configured:
        candidates = [Path(configured).expanduser()]
    else:
        candidates = [Path.cwd().parent / "shared" / "data"]
        if anchor is not None:
            candidates += [parent.parent / "shared" / "data" for parent in Path(anchor).resolve().parents]
    for folder in candidates:
        if folder.is_dir():
            return folder
    shown = [str(c) for c in candidates[:3]]
    raise MissingDataError(
        f"the real-data folder is missing (looked in {shown}{' and above' if len(candidates) > 3 else ''}); "
        f"set {DATA_ENV} to the folder holding the data files."
    )

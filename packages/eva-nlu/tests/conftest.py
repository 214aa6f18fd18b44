"""Real weights (all-MiniLM-L6-v2) and real GLUE SST-2 rows shared by the eva-nlu tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from glue_data import glue_file
from torch import nn

from eva_nlu import batches, load_model
from eva_nlu.glue import read_table


@pytest.fixture(scope="session")
def minilm_sst2() -> tuple[nn.Module, Any]:
    """(all-MiniLM-L6-v2 with a new 2-class head, its tokenizer); tests deep-copy the model before changing it."""
    torch.manual_seed(0)
    model, tokenizer = load_model("minilm", "sst2")
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def sst2_batches(minilm_sst2: tuple[nn.Module, Any]) -> list[dict[str, torch.Tensor]]:
    """Six batches of 16 real SST-2 training sentences, padded per batch, with labels."""
    table = read_table(glue_file("SST-2", "train"), "sst2", limit=96)
    rows = [{"sentence": row["sentence"], "label": int(row["label"])} for row in table]
    return batches(rows, minilm_sst2[1], "sst2", 16, with_labels=True)

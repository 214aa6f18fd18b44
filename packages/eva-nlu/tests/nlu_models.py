"""Tiny random encoders and token batches for the mechanics tests (random weights say nothing about EVA)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}


def tiny_encoder(model_type: str, **changes: Any) -> nn.Module:
    """A randomly initialized ``AutoModelForSequenceClassification`` of ``model_type`` (mechanics only)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    if model_type == "distilbert":
        config = AutoConfig.for_model(
            model_type, dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100, max_position_embeddings=64
        )
    else:
        config = AutoConfig.for_model(model_type, **{**TINY, **changes})
    return AutoModelForSequenceClassification.from_config(config).eval()


def random_batches(count: int, batch: int = 4, length: int = 10, pad_from: int = 6) -> list[dict[str, torch.Tensor]]:
    """Token batches whose first sequence is padded from position ``pad_from`` on."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, pad_from:] = 0
        out.append({"input_ids": torch.randint(1, 100, (batch, length), generator=generator), "attention_mask": mask})
    return out

"""Tiny random models and batches of every domain, for tests of mechanics across packages (random weights
say nothing about EVA's behaviour; they exercise which domain serves a model and with which settings)."""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

SMALL = {"vocab_size": 64, "max_position_embeddings": 32}


def encoder(model_type: str = "bert") -> nn.Module:
    config = transformers.AutoConfig.for_model(
        model_type, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, **SMALL
    )
    return transformers.AutoModelForSequenceClassification.from_config(config)


def decoder(model_type: str = "llama") -> nn.Module:
    """Hidden size 48: eva-llm's default rank 16 lets a layer take up to 32 components."""
    if model_type == "gpt2":
        config = transformers.GPT2Config(n_embd=48, n_layer=1, n_head=2, vocab_size=64, n_positions=32)
    else:
        config = transformers.AutoConfig.for_model(
            model_type,
            hidden_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            head_dim=24,
            **SMALL,
        )
    return transformers.AutoModelForCausalLM.from_config(config)


def vision(model_type: str = "dinov2") -> nn.Module:
    if model_type == "conv":
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 2))
    config = transformers.AutoConfig.for_model(
        model_type,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=7,
        num_labels=3,
    )
    return transformers.AutoModelForImageClassification.from_config(config)


def decision_transformer(model_type: str = "decision_transformer") -> nn.Module:
    config = transformers.DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=16, n_layer=1, n_head=1)
    return transformers.DecisionTransformerModel(config)


def token_batches(count: int = 3, labels: bool = False) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of 4 sequences of 12 tokens, right-padded; with ``labels``, the first 4 tokens of
    each sequence are prompt (-100)."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        ids = torch.randint(0, 64, (4, 12), generator=generator)
        mask = torch.ones(4, 12, dtype=torch.long)
        mask[1, 9:] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
        if labels:
            batch["labels"] = ids.masked_fill(mask == 0, -100)
            batch["labels"][:, :4] = -100
        out.append(batch)
    return out


def image_batches(count: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(4, 3, 28, 28, generator=generator) for _ in range(count)]


def trajectory_batches(count: int = 3) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    out = []
    for _ in range(count):
        mask = torch.ones(4, 6, dtype=torch.long)
        mask[0, :2] = 0
        out.append(
            {
                "states": torch.randn(4, 6, 5, generator=generator),
                "actions": torch.randn(4, 6, 2, generator=generator),
                "returns_to_go": torch.randn(4, 6, 1, generator=generator),
                "timesteps": torch.arange(6).repeat(4, 1),
                "attention_mask": mask,
            }
        )
    return out


DOMAINS: dict[str, tuple[Any, Any]] = {
    "nlu": (encoder, lambda: token_batches()),
    "llm": (decoder, lambda: token_batches(labels=True)),
    "vision": (vision, image_batches),
    "rl": (decision_transformer, trajectory_batches),
}
"""domain -> (model builder, batches builder) of a model that domain claims."""


def build(domain: str, seed: int = 0) -> nn.Module:
    """The tiny model of ``domain``, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return DOMAINS[domain][0]().eval()

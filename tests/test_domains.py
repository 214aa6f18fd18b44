"""With every domain package installed, each model is claimed by exactly the domain it belongs to."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eva_core.plugins import DomainHooks, plugin_manager

transformers = pytest.importorskip("transformers")

SMALL = {"vocab_size": 64, "max_position_embeddings": 32}


def _encoder(model_type: str) -> nn.Module:
    config = transformers.AutoConfig.for_model(
        model_type, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, **SMALL
    )
    return transformers.AutoModelForSequenceClassification.from_config(config)


def _decoder(model_type: str) -> nn.Module:
    if model_type == "gpt2":
        config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=32)
    else:
        config = transformers.AutoConfig.for_model(
            model_type,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=32,
            head_dim=8,
            **SMALL,
        )
    return transformers.AutoModelForCausalLM.from_config(config)


def _vision(model_type: str) -> nn.Module:
    if model_type == "conv":
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
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


def _decision_transformer(model_type: str) -> nn.Module:
    config = transformers.DecisionTransformerConfig(state_dim=5, act_dim=2, hidden_size=16, n_layer=1, n_head=1)
    return transformers.DecisionTransformerModel(config)


@pytest.mark.parametrize(
    ("build", "model_type", "domain"),
    [
        (_encoder, "bert", "nlu"),
        (_encoder, "roberta", "nlu"),
        (_encoder, "deberta-v2", "nlu"),
        (_decoder, "llama", "llm"),
        (_decoder, "qwen2", "llm"),
        (_decoder, "gpt2", "llm"),
        (_vision, "dinov2", "vision"),
        (_vision, "vit", "vision"),
        (_vision, "conv", "vision"),
        (_decision_transformer, "decision_transformer", "rl"),
    ],
)
def test_each_model_is_claimed_by_its_domain_only(build, model_type: str, domain: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    hooks = DomainHooks(plugin_manager(), build(model_type))
    assert hooks.domain == domain


def test_a_plain_module_falls_back_to_the_generic_plugin() -> None:
    assert DomainHooks(plugin_manager(), nn.Sequential(nn.Linear(4, 4))).domain == "generic"


def test_every_domain_package_is_registered() -> None:
    names = {name for name, _ in plugin_manager().list_name_plugin()}
    assert {"generic", "nlu", "llm", "vision", "rl"} <= names

"""With every domain package installed, each model is claimed by exactly the domain it belongs to."""

from __future__ import annotations

import pytest
import torch
from tiny_models import decision_transformer, decoder, encoder, vision
from torch import nn

from eva_core.plugins import plugin_manager


@pytest.mark.parametrize(
    ("build", "model_type", "domain"),
    [
        (encoder, "bert", "nlu"),
        (encoder, "roberta", "nlu"),
        (encoder, "deberta-v2", "nlu"),
        (decoder, "llama", "llm"),
        (decoder, "qwen2", "llm"),
        (decoder, "gpt2", "llm"),
        (vision, "dinov2", "vision"),
        (vision, "vit", "vision"),
        (vision, "conv", "vision"),
        (decision_transformer, "decision_transformer", "rl"),
    ],
)
def test_each_model_is_claimed_by_its_domain_only(build, model_type: str, domain: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    assert plugin_manager().choose_domain(build(model_type)) == domain


def test_a_plain_module_falls_back_to_the_generic_plugin() -> None:
    assert plugin_manager().choose_domain(nn.Sequential(nn.Linear(4, 4))) == "generic"


def test_every_domain_package_is_registered() -> None:
    manager = plugin_manager()
    assert manager.domains == ["llm", "nlu", "rl", "vision"]
    assert manager.names[0] == "generic"

"""The llm plugin passes eva-core's plugin contract on tiny random Llama and GPT-2 models."""

from __future__ import annotations

import pytest
import torch
from llm_models import tiny_causal_lm, token_batches
from peft import LoraConfig
from torch import nn

import eva_llm
from eva_core.testing import PluginContract
from eva_llm import plugin


class TestLlamaContract(PluginContract):
    domain = "llm"

    @pytest.fixture
    def model(self) -> nn.Module:
        return tiny_causal_lm("llama")

    @pytest.fixture
    def batches(self) -> list[dict[str, torch.Tensor]]:
        return token_batches(3)

    @pytest.fixture
    def plugin(self) -> object:
        return plugin


class TestGPT2Contract(TestLlamaContract):
    @pytest.fixture
    def model(self) -> nn.Module:
        return tiny_causal_lm("gpt2")

    @pytest.fixture
    def lora_config(self, model: nn.Module) -> LoraConfig:
        """GPT-2's Conv1D stores W as (d_in, d_out): the domain's config sets fan_in_fan_out."""
        return eva_llm.lora_config_for_model(model, rank=2)

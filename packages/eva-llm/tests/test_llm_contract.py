"""The llm plugin passes eva-core's plugin contract on tiny random Llama and GPT-2 models (GPT-2's Conv1D
needs ``fan_in_fan_out``, which the plugin's ``eva_lora_fields`` gives)."""

from __future__ import annotations

import pytest
import torch
from llm_models import tiny_causal_lm, token_batches
from torch import nn

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

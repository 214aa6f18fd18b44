"""The eva-core plugin contract on a tiny Decision Transformer with batches from a real minari dataset."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig

import eva_rl.plugin
from eva_core.testing import PluginContract


class TestRLContract(PluginContract):
    domain = "rl"

    @pytest.fixture
    def model(self, tiny_dt: torch.nn.Module) -> torch.nn.Module:
        return tiny_dt

    @pytest.fixture
    def batches(self, dt_batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return dt_batches

    @pytest.fixture
    def plugin(self) -> Any:
        return eva_rl.plugin

    @pytest.fixture
    def lora_config(self, model: torch.nn.Module) -> LoraConfig | None:
        return LoraConfig(r=2, lora_alpha=2, fan_in_fan_out=True)

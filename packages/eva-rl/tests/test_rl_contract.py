"""The eva-core plugin contract on a tiny Decision Transformer with batches from a real minari dataset; the
fit is applied with the plugin's own LoRA fields (``fan_in_fan_out`` for GPT-2's ``Conv1D``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

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

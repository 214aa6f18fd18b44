"""The nlu plugin passes eva-core's contract suite on real MiniLM weights and real SST-2 sentences."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import eva_nlu.plugin
from eva_core.testing import PluginContract


class TestNluContract(PluginContract):
    domain = "nlu"

    @pytest.fixture
    def model(self, minilm_sst2: tuple[nn.Module, Any]) -> nn.Module:
        return copy.deepcopy(minilm_sst2[0])

    @pytest.fixture
    def batches(self, sst2_batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return sst2_batches[:3]

    @pytest.fixture
    def plugin(self) -> object:
        return eva_nlu.plugin

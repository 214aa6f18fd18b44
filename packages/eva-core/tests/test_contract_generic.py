"""The built-in generic plugin passes the contract every domain plugin must pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eva_core.plugins import generic
from eva_core.testing import PluginContract


class _TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 16)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.embed(input_ids))))


class TestGenericContract(PluginContract):
    domain = "generic"

    @pytest.fixture
    def model(self) -> nn.Module:
        return _TinyEncoder()

    @pytest.fixture
    def batches(self) -> list[dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(1)
        return [
            {
                "input_ids": torch.randint(0, 50, (4, 12), generator=generator),
                "attention_mask": torch.ones(4, 12, dtype=torch.long),
            }
            for _ in range(3)
        ]

    @pytest.fixture
    def plugin(self) -> object:
        return generic

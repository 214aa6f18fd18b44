"""The vision plugin passes eva-core's contract suite on a transformers DINOv2 (with registers), a timm
ViT with the fused qkv, and EfficientNet-Lite0 with real ImageNet weights on real Fashion-MNIST images."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from vision_models import grey_images, tiny_dinov2, tiny_timm_vit

import eva_vision.plugin
from eva_core.testing import PluginContract


class TestTransformersDinov2Contract(PluginContract):
    domain = "vision"

    @pytest.fixture
    def model(self) -> nn.Module:
        return tiny_dinov2(registers=2)

    @pytest.fixture
    def batches(self) -> list[dict[str, torch.Tensor]]:
        images = grey_images(24, 16)
        return [{"pixel_values": images[i : i + 8]} for i in range(0, 24, 8)]

    @pytest.fixture
    def plugin(self) -> object:
        return eva_vision.plugin


class TestTimmVitContract(PluginContract):
    domain = "vision"

    @pytest.fixture
    def model(self) -> nn.Module:
        return tiny_timm_vit()

    @pytest.fixture
    def batches(self) -> list[torch.Tensor]:
        images = grey_images(24, 28).expand(-1, 3, -1, -1)
        return [images[i : i + 8] for i in range(0, 24, 8)]

    @pytest.fixture
    def plugin(self) -> object:
        return eva_vision.plugin


class TestEfficientNetLite0Contract(PluginContract):
    domain = "vision"

    @pytest.fixture
    def model(self, effnet: nn.Module) -> nn.Module:
        return copy.deepcopy(effnet)

    @pytest.fixture
    def batches(
        self, effnet_batches: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return effnet_batches[:3]

    @pytest.fixture
    def plugin(self) -> object:
        return eva_vision.plugin

"""Real weights (EfficientNet-Lite0, ImageNet) and real images (Fashion-MNIST) shared by the tests, plus
tiny random ViTs for the mechanics."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vision_models import read_fashion_mnist

from eva_vision import load_efficientnet_lite0, to_model_input
from eva_vision.efficientnet import MEAN, STD

torch.set_num_threads(1)

EFFNET_SIZE = 64
"""Input size of EfficientNet-Lite0 in tests: small keeps every fit and step fast on one thread."""


@pytest.fixture(scope="session")
def effnet() -> nn.Module:
    """timm's EfficientNet-Lite0 with ImageNet weights and a new seeded 5-class head; tests deep-copy it."""
    return load_efficientnet_lite0(5, seed=0)


@pytest.fixture(scope="session")
def fmnist_5_9() -> tuple[torch.Tensor, torch.Tensor]:
    """128 real Fashion-MNIST training images of classes 5-9 as EfficientNet input, labels 0-4."""
    images, labels = read_fashion_mnist("train", classes=range(5, 10), limit=128)
    return to_model_input(images, size=EFFNET_SIZE, channels=3, mean=MEAN, std=STD), labels - 5


@pytest.fixture(scope="session")
def effnet_batches(fmnist_5_9: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Eight (images, labels) batches of 16."""
    images, labels = fmnist_5_9
    return [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 128, 16)]

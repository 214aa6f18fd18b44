"""Tiny random ViTs for the mechanics tests, and real Fashion-MNIST images sized for them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eva_vision import read_fashion_mnist, to_model_input


def tiny_dinov2(registers: int = 0, swiglu: bool = False, num_labels: int = 5) -> nn.Module:
    """A random transformers DINOv2 classifier: 16 x 16 grey images, 4 x 4 patches, width 32, 2 blocks."""
    from transformers import (
        Dinov2Config,
        Dinov2ForImageClassification,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersForImageClassification,
    )

    torch.manual_seed(0)
    sizes = {
        "image_size": 16,
        "patch_size": 4,
        "num_channels": 1,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_labels": num_labels,
        "use_swiglu_ffn": swiglu,
    }
    if registers:
        config = Dinov2WithRegistersConfig(num_register_tokens=registers, **sizes)
        return Dinov2WithRegistersForImageClassification(config).eval()
    return Dinov2ForImageClassification(Dinov2Config(**sizes)).eval()


def tiny_timm_vit() -> nn.Module:
    """A random timm DINOv2-style ViT with 4 register tokens and the fused qkv: 28 x 28 RGB, 14 x 14 patches."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        img_size=28,
        patch_size=14,
        embed_dim=64,
        depth=2,
        num_heads=2,
        num_classes=5,
    )
    return model.eval()


def grey_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Real Fashion-MNIST test images resized to (count, 1, size, size), normalized to about [-1, 1]."""
    images, _ = read_fashion_mnist("test", limit=count)
    return to_model_input(images, size=size)

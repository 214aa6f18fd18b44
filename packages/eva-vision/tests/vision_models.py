"""Tiny random ViTs for the mechanics tests, and real Fashion-MNIST images (read here: the tests of a
published package do not use eva-bench's reader)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from eva_vision import to_model_input
from eva_vision.cli import read_idx

FASHION_MNIST_ENV = "EVA_FASHION_MNIST_DIR"


def fashion_mnist_dir() -> Path:
    """``$EVA_FASHION_MNIST_DIR``, else where ``apt-get install dataset-fashion-mnist`` puts the files."""
    folder = Path(os.environ.get(FASHION_MNIST_ENV) or "/usr/share/datasets/fashion-mnist")
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"Fashion-MNIST is not in {folder}: `apt-get install dataset-fashion-mnist`, or set {FASHION_MNIST_ENV} "
            "to the folder holding t10k-images-idx3-ubyte.gz and its siblings."
        )
    return folder


def read_fashion_mnist(
    split: str, classes: Sequence[int] | None = None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of ``split`` (``train`` or ``t10k``/``test``),
    only ``classes`` if given, the first ``limit``."""
    prefix = "train" if split == "train" else "t10k"
    folder = fashion_mnist_dir()
    images = torch.from_numpy(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype("int64"))
    if classes is not None:
        keep = torch.isin(labels, torch.as_tensor(list(classes)))
        images, labels = images[keep], labels[keep]
    return images[:limit], labels[:limit]


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

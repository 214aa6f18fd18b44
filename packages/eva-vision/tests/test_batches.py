"""Batches the plugin reads (and refuses), models it does not claim, and raw images made into model input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vision_models import read_fashion_mnist

import eva_core.errors
import eva_vision
from eva_vision.architectures import model_kind


@pytest.mark.parametrize("batch", ["not a batch", torch.randn(4, 10), {"input_ids": torch.ones(2, 3)}])
def test_a_batch_without_images_gets_a_clear_error(batch: object) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(eva_core.errors.UnsupportedBatchError, match=r"no \(B, C, H, W\) image tensor.*ImageBatch"):
        eva_vision.init(model, [batch, batch], rank=1, progress=False)


def test_text_and_peft_models_are_not_claimed() -> None:
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert model_kind(bert) is None
    assert model_kind(nn.Sequential(nn.Linear(4, 4))) is None
    assert model_kind(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))) is None


def test_to_model_input_resizes_repeats_and_normalizes_real_images() -> None:
    images, _ = read_fashion_mnist("test", limit=4)  # (4, 1, 28, 28) uint8
    x = eva_vision.to_model_input(images, size=16, channels=3, mean=(0.5,), std=(0.5,))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    torch.testing.assert_close(x[:, 0], x[:, 2])
    same = eva_vision.to_model_input(images, mean=(0.0,), std=(1.0,))
    torch.testing.assert_close(same, images.float() / 255)
    with pytest.raises(eva_core.errors.InvalidConfigError, match="single-channel"):
        eva_vision.to_model_input(x, channels=1)

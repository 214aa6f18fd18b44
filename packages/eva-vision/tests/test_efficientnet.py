"""EfficientNet-Lite0 loads its ImageNet weights strictly and classifies real images sensibly."""

from __future__ import annotations

import torch

import eva_vision
from eva_vision.efficientnet import MEAN, STD

JERSEY = 610  # ImageNet "jersey, T-shirt, tee shirt"


def test_imagenet_weights_classify_t_shirts_as_jerseys() -> None:
    model = eva_vision.load_efficientnet_lite0()  # strict load: every key matches
    assert not model.training and model._fc.out_features == 1000
    images, _ = eva_vision.read_fashion_mnist("test", classes=[0], limit=12)  # T-shirts/tops
    x = eva_vision.to_model_input(images, size=224, channels=3, mean=MEAN, std=STD)
    with torch.no_grad():
        logits = model(x)  # (12, 1000)
        alone = model(x[:1])
    assert torch.bincount(logits.argmax(-1), minlength=1000).argmax() == JERSEY
    assert logits.std(-1).min() > 1.0  # not degenerate
    torch.testing.assert_close(alone, logits[:1], rtol=1e-4, atol=1e-4)  # BN uses running statistics


def test_new_head_is_seeded() -> None:
    a, b = eva_vision.load_efficientnet_lite0(7, seed=3), eva_vision.load_efficientnet_lite0(7, seed=3)
    assert a._fc.out_features == 7 and torch.equal(a._fc.weight, b._fc.weight)

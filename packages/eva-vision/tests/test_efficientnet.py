"""EfficientNet-Lite0 is timm's ``efficientnet_lite0`` with the offline ImageNet weights mapped onto it: it
classifies real images sensibly, and gives the logits of the hand-written model the weights were made
for (kept below as the reference only), in eval and in train mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vision_models import read_fashion_mnist

import eva_vision
from eva_vision.efficientnet import MEAN, STD, weights_path

JERSEY = 610  # ImageNet "jersey, T-shirt, tee shirt"


def test_imagenet_weights_classify_t_shirts_as_jerseys() -> None:
    model = eva_vision.load_efficientnet_lite0()  # strict load: every key matches
    assert not model.training and model.classifier.out_features == 1000
    images, _ = read_fashion_mnist("test", classes=[0], limit=12)  # T-shirts/tops
    x = eva_vision.to_model_input(images, size=224, channels=3, mean=MEAN, std=STD)
    with torch.no_grad():
        logits = model(x)  # (12, 1000)
        alone = model(x[:1])
    assert torch.bincount(logits.argmax(-1), minlength=1000).argmax() == JERSEY
    assert logits.std(-1).min() > 1.0  # not degenerate
    torch.testing.assert_close(alone, logits[:1], rtol=1e-4, atol=1e-4)  # BN uses running statistics


def test_new_head_is_seeded_and_leaves_the_callers_generator_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = eva_vision.load_efficientnet_lite0(7, seed=3), eva_vision.load_efficientnet_lite0(7, seed=3)
    assert a.classifier.out_features == 7 and torch.equal(a.classifier.weight, b.classifier.weight)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


# --- the reference: the hand-written EfficientNet-Lite0 eva-vision used before timm ------------------
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # (repeats, kernel, stride, expand, out channels)  # fmt: skip


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _MBConvBlock(nn.Module):
    """1x1 expand (if ratio > 1) -> k x k depthwise -> 1x1 project, no SE, ReLU6; residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.residual = stride == 1 and in_channels == out_channels
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(
            hidden, hidden, kernel, stride=stride, padding=(kernel - 1) // 2, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self._relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = self._relu(self._bn0(self._expand_conv(out)))
        out = self._relu(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class _HandWrittenLite0(nn.Module):
    """3x3 s2 stem -> 16 MBConv blocks -> 1x1 head conv (1280) -> pool -> dropout 0.2 -> fc; (B, 3, H, W) -> (B, K)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks, channels = [], 32
        for repeats, kernel, stride, expand, out_channels in _STAGES:
            for index in range(repeats):
                blocks.append(_MBConvBlock(channels, out_channels, kernel, stride if index == 0 else 1, expand))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._relu = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._relu(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


def _hand_written(num_classes: int | None, seed: int) -> nn.Module:
    model = _HandWrittenLite0()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
    if num_classes is not None:
        torch.manual_seed(seed)
        model._fc = nn.Linear(1280, num_classes)
    return model.eval()


@pytest.mark.parametrize("size", [64, 224])
def test_timm_model_gives_the_hand_written_models_logits_on_real_images(size: int) -> None:
    images, _ = read_fashion_mnist("test", limit=16)  # every class
    x = eva_vision.to_model_input(images, size=size, channels=3, mean=MEAN, std=STD)
    with torch.no_grad():
        expected, got = _hand_written(None, 0)(x), eva_vision.load_efficientnet_lite0()(x)  # (16, 1000) ImageNet
    assert expected.std(-1).min() > 1.0  # informative logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    timm_model, reference = eva_vision.load_efficientnet_lite0(5, seed=4), _hand_written(5, seed=4)  # new heads
    with torch.no_grad():
        torch.testing.assert_close(timm_model(x), reference(x), rtol=0, atol=1e-5)
    for model in (timm_model, reference):  # training mode: the classifier dropout, batch norm kept frozen
        model.train()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        expected = reference(x)
        torch.manual_seed(0)
        got = timm_model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

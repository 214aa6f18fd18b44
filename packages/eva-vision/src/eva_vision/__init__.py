"""eva-vision: EVA for image models (transformers DINOv2/ViT, timm VisionTransformer, Conv2d networks).

``eva_vision.init(model, loader)`` EVA-initializes LoRA on the transformer blocks of a ViT (token rows)
or on the ``groups == 1`` convs of a CNN (receptive-field rows) and trains the classification head in
full; ``eva_vision.finetune(model, task, method)`` runs the comparison recipe on real data
(Fashion-MNIST, scikit-learn digits) with EfficientNet-Lite0 (ImageNet weights) or the "DINOv2
architecture, pretrained locally" model.
"""

from __future__ import annotations

from .api import DEFAULTS, default_lora_config, init
from .architectures import VIT_TYPES, head_modules, model_kind, target_modules
from .batches import TOKENS, ImageBatch, Tokens
from .datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    DataFormatError,
    read_digits,
    read_fashion_mnist,
)
from .efficientnet import EfficientNetLite0, load_efficientnet_lite0
from .loader import image_batches, to_model_input
from .normalization import freeze_batch_norm
from .patches import conv_rows
from .pretrain import LABEL as DINOV2_LOCAL_LABEL
from .pretrain import PretrainSettings, load_pretrained, pretrain
from .recipe import MODEL_ALIASES, evaluate, finetune, load_model
from .tasks import TASKS, VisionTask, get_task

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "DINOV2_LOCAL_LABEL",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "MODEL_ALIASES",
    "TASKS",
    "TOKENS",
    "VIT_TYPES",
    "DataFormatError",
    "EfficientNetLite0",
    "ImageBatch",
    "PretrainSettings",
    "Tokens",
    "VisionTask",
    "conv_rows",
    "default_lora_config",
    "evaluate",
    "finetune",
    "freeze_batch_norm",
    "get_task",
    "head_modules",
    "image_batches",
    "init",
    "load_efficientnet_lite0",
    "load_model",
    "load_pretrained",
    "model_kind",
    "pretrain",
    "read_digits",
    "read_fashion_mnist",
    "target_modules",
    "to_model_input",
]

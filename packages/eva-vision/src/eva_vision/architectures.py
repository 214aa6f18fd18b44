"""Which image models this domain knows, and where their blocks, heads and token prefixes are.

Three families, recognised without importing timm:

- ``transformers``: ``config.model_type`` in :data:`VIT_TYPES` (DINOv2, DINOv2 with registers, ViT);
  blocks are ``<backbone>.encoder.layer.<i>.``, the head is ``classifier``.
- ``timm``: a ``timm`` ``VisionTransformer`` (or subclass); blocks are ``blocks.<i>.``, the head is ``head``.
- ``cnn``: any other module without a transformers config that holds an ``nn.Conv2d`` with ``groups == 1``
  (torchvision-style convnets, timm's EfficientNets such as :func:`eva_vision.load_efficientnet_lite0`);
  the head is a top-level child named in :data:`CNN_HEADS`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from torch import nn

__all__ = [
    "CNN_HEADS",
    "VIT_TYPES",
    "ModelKind",
    "head_modules",
    "model_kind",
    "patch_size",
    "prefix_tokens",
    "target_modules",
]

ModelKind = Literal["transformers", "timm", "cnn"]

VIT_TYPES: frozenset[str] = frozenset({"dinov2", "dinov2_with_registers", "vit"})
"""``config.model_type`` values of the transformers ViTs this domain claims."""

CNN_HEADS: tuple[str, ...] = ("classifier", "fc", "head", "_fc")
"""Top-level child names taken as a CNN's classification head (trained in full, never adapted)."""

_TRANSFORMERS_BLOCK = re.compile(r"(^|\.)encoder\.layer\.\d+\.")
_TIMM_BLOCK = re.compile(r"(^|\.)blocks\.\d+\.")


def _is_timm_vit(model: nn.Module) -> bool:
    return any(
        cls.__name__ == "VisionTransformer" and cls.__module__.startswith("timm.") for cls in type(model).__mro__
    )


def model_kind(model: nn.Module) -> ModelKind | None:
    """The family of ``model`` (see the module docstring), or None when this domain does not know it."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is not None:
        return "transformers" if model_type in VIT_TYPES else None
    if _is_timm_vit(model):
        return "timm"
    if any(isinstance(m, nn.Conv2d) and m.groups == 1 for m in model.modules()):
        return "cnn"
    return None


def target_modules(model: nn.Module) -> list[str]:
    """The layers EVA adapts by default, in model order.

    ViTs: every ``nn.Linear`` of every transformer block (attention q/k/v or timm's fused ``qkv``, the
    attention output, the MLP or SwiGLU linears); never the patch embedding or the head. CNNs: every
    ``nn.Conv2d`` with ``groups == 1`` (stem, expansion, projection, head 1x1 convs) outside the head;
    depthwise/grouped convs are skipped because peft's LoRA for ``groups > 1`` is limited.
    """
    kind = model_kind(model)
    if kind in ("transformers", "timm"):
        block = _TRANSFORMERS_BLOCK if kind == "transformers" else _TIMM_BLOCK
        return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and block.search(name)]
    if kind == "cnn":
        heads = tuple(f"{head}." for head in head_modules(model))
        return [
            name
            for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and name and not name.startswith(heads)
        ]
    return []


def head_modules(model: nn.Module) -> list[str]:
    """Top-level classification heads with parameters: transformers ``classifier``, timm ``head``, a CNN's
    ``classifier``/``fc``/``head``/``_fc``. Trained in full (``modules_to_save``), never EVA-initialized."""
    kind = model_kind(model)
    names = {"transformers": ("classifier",), "timm": ("head",), "cnn": CNN_HEADS}.get(kind or "", ())
    children = dict(model.named_children())
    return [name for name in names if name in children and any(True for _ in children[name].parameters())]


def prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patch tokens of a ViT: 1 (CLS) + register tokens (+ distillation token)."""
    if model_kind(model) == "timm":
        return int(getattr(model, "num_prefix_tokens", 1))
    config = getattr(model, "config", None)
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def patch_size(model: nn.Module) -> tuple[int, int]:
    """(p_h, p_w), the patch size of a ViT's patch embedding."""
    timm = model_kind(model) == "timm"
    size: Any = model.patch_embed.patch_size if timm else model.config.patch_size  # type: ignore[union-attr]
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

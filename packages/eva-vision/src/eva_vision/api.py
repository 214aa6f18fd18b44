"""``eva_vision.init``: EVA for an image model with this domain's defaults and its head trained in full."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from peft import LoraConfig, PeftModel
from torch import nn

import eva_core

from .architectures import head_modules
from .batches import TOKENS, ImageBatch, Tokens, images_of

__all__ = ["DEFAULTS", "default_lora_config", "init"]

DEFAULTS: dict[str, Any] = {"rank": 8, "rho": 2.0, "tau": 0.99, "whiten": True}
"""EVA settings for image models unless overridden: the budget ``8 * L`` shared with ``rho = 2``,
components stable at cosine 0.99, and whitened ``A`` rows (``A x`` has unit variance per component), as
the EVA authors recommend for vision. Every key is an :class:`eva_core.EvaConfig` field."""


def default_lora_config(model: nn.Module, rank: int, **fields: Any) -> LoraConfig:
    """The ``LoraConfig`` this domain trains with: ``lora_alpha = rank`` (scaling 1), no dropout, and the
    classification head (transformers ``classifier``, timm ``head``, a CNN's ``classifier``/``fc``/``_fc``)
    in ``modules_to_save`` so it trains in full.

    ``fields`` override any ``LoraConfig`` field (``lora_dropout=0.1``, ``use_rslora=True``...).
    """
    base: dict[str, Any] = {"r": rank, "lora_alpha": rank, "lora_dropout": 0.0}
    heads = head_modules(model)
    if heads:
        base["modules_to_save"] = heads
    return LoraConfig(**{**base, **fields})


class _WithTokens:
    """``loader`` with every batch wrapped in an :class:`ImageBatch` selecting ``tokens``."""

    def __init__(self, loader: Iterable[Any], tokens: Tokens) -> None:
        self.loader, self.tokens = loader, tokens

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            images = images_of(batch)
            yield batch if images is None else ImageBatch(images, self.tokens)  # no images: the plugin says why

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def init(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    tokens: Tokens = "all",
    lora_config: LoraConfig | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA on the blocks of a ViT or the convs of a CNN; its head is trained in full.

    Args:
        model: a transformers DINOv2/ViT, a timm ``VisionTransformer``, or a convnet of ``nn.Conv2d``.
        loader: batches of images (B, C, H, W), ``(images, labels)``, or dicts with ``pixel_values``.
        tokens: which ViT tokens feed the SVD: ``"all"`` (CLS, registers, patches), ``"patch"`` or ``"cls"``.
        lora_config: dropout, alpha, ``modules_to_save``...; default :func:`default_lora_config`.
        overrides: :class:`eva_core.EvaConfig` fields replacing :data:`DEFAULTS` (``rank=16``, ``whiten=False``...).

    Returns:
        a ``peft.PeftModel``; its ``eva_state`` attribute holds ranks and spectra.

    Raises:
        eva_core.InvalidConfigError: ``tokens`` is not one of ``"all"``, ``"patch"``, ``"cls"``, or not
            ``"all"`` for a CNN.
    """
    if tokens not in TOKENS:
        raise eva_core.InvalidConfigError(f"init(tokens={tokens!r}) is invalid: expected one of {TOKENS}.")
    settings = {**DEFAULTS, "domain": "vision", **overrides}
    config = lora_config or default_lora_config(model, settings["rank"])
    batches = loader if tokens == "all" else _WithTokens(loader, tokens)
    return eva_core.init(model, batches, lora_config=config, **settings)

"""``eva_vision.init``: ``eva_core.init`` for an image model, with the ViT tokens to measure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from torch import nn

import eva_core
from eva_core.errors import InvalidConfigError

from .batches import TOKENS, ImageBatch, Tokens, images_of

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["init"]


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

    The same as ``eva_core.init(model, loader, lora_config=lora_config, domain="vision", **overrides)``
    (this domain's defaults: :data:`eva_vision.plugin.DEFAULT_CONFIG`, the head in ``modules_to_save``),
    plus ``tokens``.

    Args:
        model: a transformers DINOv2/ViT, a timm ``VisionTransformer``, or a convnet of ``nn.Conv2d``.
        loader: batches of images (B, C, H, W), ``(images, labels)``, or dicts with ``pixel_values``.
        tokens: which ViT tokens feed the SVD: ``"all"`` (CLS, registers, patches), ``"patch"`` or ``"cls"``.
        lora_config: dropout, alpha, ``modules_to_save``..., used as given; default: the head in
            ``modules_to_save`` and ``lora_alpha = rank``.
        overrides: :class:`eva_core.EvaConfig` fields replacing the defaults (``rank=16``, ``whiten=False``...),
            and ``eva_core.fit``'s other keywords.

    Returns:
        a ``peft.PeftModel``; its ``eva_state`` attribute holds ranks and spectra.

    Raises:
        eva_core.errors.DomainMismatchError: ``model`` is not an image model this domain claims (a BERT, a
            causal LM, a DeiT...); the message names the package or ``eva_core.init`` that serves it.
        eva_core.errors.InvalidConfigError: ``tokens`` is not one of ``"all"``, ``"patch"``, ``"cls"``, or not
            ``"all"`` for a CNN.
    """
    if tokens not in TOKENS:
        raise InvalidConfigError(f"init(tokens={tokens!r}) is invalid: expected one of {TOKENS}.")
    overrides.setdefault("domain", "vision")
    manager = overrides.pop("plugins", None) or eva_core.plugin_manager()
    if overrides["domain"] == "vision":
        manager.require_claim(model, "vision")  # before any batch is read or the model is touched
    batches = loader if tokens == "all" else _WithTokens(loader, tokens)
    return eva_core.init(model, batches, lora_config=lora_config, plugins=manager, **overrides)

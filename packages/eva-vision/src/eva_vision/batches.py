"""Image batches as a loader yields them, which tokens of a ViT feed the SVD, and raw images made into
what a model takes.

A loader may yield image tensors (B, C, H, W), ``(images, labels)`` tuples or lists, dicts with
``pixel_values`` (transformers image-processor output), or :class:`ImageBatch` (which also says which
tokens count). Transformers models get ``pixel_values=``, timm and plain modules the images positionally.
:func:`to_model_input` turns uint8 or [0, 1] images into the resized, normalized tensors a model takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from eva_core import PreparedBatch
from eva_core.errors import InvalidConfigError, UnsupportedBatchError

from .architectures import model_kind, patch_size, prefix_tokens

__all__ = ["TOKENS", "ImageBatch", "Tokens", "images_of", "prepare", "to_model_input", "token_mask"]

Tokens = Literal["all", "patch", "cls"]
TOKENS: tuple[str, ...] = ("all", "patch", "cls")
"""Which ViT tokens give SVD rows: ``all`` (CLS, registers and patches), ``patch`` (patches only), ``cls``."""


@dataclass(frozen=True)
class ImageBatch:
    """Images and the tokens of a ViT whose inputs EVA measures.

    Attributes:
        pixel_values: (B, C, H, W) float images, normalized as the model expects.
        tokens: ``"all"`` (default), ``"patch"`` or ``"cls"``; CNNs only take ``"all"``.
    """

    pixel_values: torch.Tensor
    tokens: Tokens = "all"

    def __post_init__(self) -> None:
        if self.tokens not in TOKENS:
            raise InvalidConfigError(f"ImageBatch(tokens={self.tokens!r}) is invalid: expected one of {TOKENS}.")


def images_of(batch: Any) -> torch.Tensor | None:
    """The (B, C, H, W) images in ``batch`` (tensor, ``(images, labels)``, dict with ``pixel_values``, or
    :class:`ImageBatch`), or None when ``batch`` holds none."""
    if isinstance(batch, ImageBatch):
        return batch.pixel_values
    if isinstance(batch, torch.Tensor):
        return batch if batch.dim() == 4 else None
    if isinstance(batch, Mapping):
        images = batch.get("pixel_values")
        return images if isinstance(images, torch.Tensor) and images.dim() == 4 else None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor) and batch[0].dim() == 4:
        return batch[0]
    return None


def token_mask(model: nn.Module, images: torch.Tensor, tokens: Tokens) -> torch.Tensor | None:
    """(B, T) bool over a ViT's tokens ``[CLS, registers..., patches...]``, or None for ``"all"``.

    T = prefix tokens + (H // p_h) * (W // p_w).

    Raises:
        InvalidConfigError: ``tokens`` other than ``"all"`` for a model that is not a ViT.
    """
    if tokens == "all":
        return None
    if model_kind(model) not in ("transformers", "timm"):
        raise InvalidConfigError(
            f"tokens={tokens!r} selects ViT tokens, but {type(model).__name__} is not a ViT; use tokens='all'."
        )
    (p_h, p_w), prefix = patch_size(model), prefix_tokens(model)
    count = prefix + (images.shape[-2] // p_h) * (images.shape[-1] // p_w)
    mask = torch.zeros(images.shape[0], count, dtype=torch.bool, device=images.device)  # (B, T)
    if tokens == "cls":
        mask[:, 0] = True
    else:
        mask[:, prefix:] = True
    return mask


def prepare(batch: Any, model: nn.Module) -> PreparedBatch:
    """Model inputs and row mask of one image batch.

    Raises:
        UnsupportedBatchError: ``batch`` holds no (B, C, H, W) image tensor.
    """
    images = images_of(batch)
    if images is None:
        shape = f" of shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else ""
        raise UnsupportedBatchError(
            f"batches yielded a {type(batch).__name__}{shape}, which holds no (B, C, H, W) image tensor; yield "
            "images, (images, labels), a dict with 'pixel_values', or eva_vision.ImageBatch."
        )
    tokens: Tokens = batch.tokens if isinstance(batch, ImageBatch) else "all"
    mask = token_mask(model, images, tokens)
    if model_kind(model) == "transformers":
        return PreparedBatch(kwargs={"pixel_values": images}, row_mask=mask)
    return PreparedBatch(args=(images,), row_mask=mask)


def to_model_input(
    images: torch.Tensor,
    *,
    size: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> torch.Tensor:
    """uint8 or [0, 1] float images -> normalized float images the model takes.

    Args:
        images: (N, C, H, W), uint8 (0-255) or float in [0, 1].
        size: resize to (size, size) with bilinear interpolation (antialiased when shrinking); None keeps H, W.
        channels: repeat a single channel this many times (grey -> RGB); None keeps C.
        mean: subtracted per output channel (or one value for all), after scaling to [0, 1].
        std: divides per output channel (or one value for all), after subtracting ``mean``.

    Returns:
        (N, channels, size, size) float32.

    Raises:
        InvalidConfigError: ``channels`` asked of images with more than one channel.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()  # (N, C, H, W)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] != 1:
            raise InvalidConfigError(f"channels={channels} needs single-channel images; got {x.shape[1]} channels.")
        x = x.expand(-1, channels, -1, -1)  # (N, channels, size, size)
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(list(mean), dtype=x.dtype).reshape(shape)
    std_t = torch.as_tensor(list(std), dtype=x.dtype).reshape(shape)
    return ((x - mean_t) / std_t).contiguous()

"""Image batches for a model: resize, repeat channels, normalize, split into ``(images, labels)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from eva_core import InvalidConfigError

__all__ = ["ImageSpec", "image_batches", "to_model_input"]

ImageSpec = tuple[int, int, Sequence[float], Sequence[float]]
"""(size, channels, mean, std) a model expects."""


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
        size: resize to (size, size) with bilinear interpolation; None keeps H, W.
        channels: repeat a single channel this many times (grey -> RGB); None keeps C.
        mean, std: per output channel (or one value for all), applied after scaling to [0, 1].

    Returns:
        (N, channels, size, size) float32.
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


def image_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    size: int | None = None,
    channels: int | None = None,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches, preprocessed once with :func:`to_model_input`.

    Args:
        images: (N, C, H, W) uint8 or float; labels: (N,) int64.
        shuffle: a seeded permutation of the examples before batching (the last batch may be smaller).

    Returns:
        a list of ((B, channels, size, size) float32, (B,) int64).
    """
    if batch_size < 1:
        raise InvalidConfigError(f"batch_size={batch_size!r} is invalid: expected an integer >= 1.")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)) if shuffle else None
    if order is not None:
        images, labels = images[order], labels[order]
    x = to_model_input(images, size=size, channels=channels, mean=mean, std=std)
    return [(x[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)]

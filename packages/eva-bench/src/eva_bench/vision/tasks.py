"""The image classification tasks of the comparison runner, read from real data offline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from eva_core.errors import InvalidConfigError

from .data import read_digits, read_fashion_mnist

__all__ = ["TASKS", "VisionTask", "get_task"]

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class VisionTask:
    """A classification task: ``load(split, limit)`` gives uint8 images (N, 1, H, W) and labels (N,) in
    ``0..num_classes-1``; ``split`` is ``"train"`` or ``"dev"``."""

    name: str
    num_classes: int
    load: Callable[[str, int | None], Split]
    description: str = ""


def _fmnist_5_9(split: str, limit: int | None) -> Split:
    images, labels = read_fashion_mnist("train" if split == "train" else "test", classes=range(5, 10), limit=limit)
    return images, labels - 5


_DIGITS_DEV_FRACTION = 0.3
_DIGITS_SPLIT_SEED = 0


def _digits(split: str, limit: int | None) -> Split:
    images, labels = read_digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_DIGITS_SPLIT_SEED))
    cut = round(len(labels) * (1 - _DIGITS_DEV_FRACTION))
    chosen = order[:cut] if split == "train" else order[cut:]
    if limit is not None:
        chosen = chosen[:limit]
    return images[chosen], labels[chosen]


TASKS: Mapping[str, VisionTask] = {
    "fmnist-5-9": VisionTask(
        "fmnist-5-9",
        5,
        _fmnist_5_9,
        "Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) remapped to 0-4; train split -> "
        "train, t10k -> dev. Unseen by the locally pretrained DINOv2-architecture model (classes 0-4).",
    ),
    "digits": VisionTask(
        "digits",
        10,
        _digits,
        "scikit-learn's 8x8 digits, a fixed seeded 70/30 train/dev split (1258 / 539 images).",
    ),
}
"""Tasks by name."""


def get_task(task: str | VisionTask) -> VisionTask:
    """The :class:`VisionTask` named ``task`` (case-insensitive), or ``task`` itself.

    Raises:
        InvalidConfigError: unknown name.
    """
    if isinstance(task, VisionTask):
        return task
    found = TASKS.get(task.lower())
    if found is None:
        raise InvalidConfigError(f"task={task!r} is not a vision task; pick one of {sorted(TASKS)}.")
    return found

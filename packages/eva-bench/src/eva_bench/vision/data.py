"""Real image data read offline: Fashion-MNIST through torchvision's reader, scikit-learn's digits, and
``(images, labels)`` batches of them.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (``apt-get install
dataset-fashion-mnist``, files in ``/usr/share/datasets/fashion-mnist``, read-only), or from the folder
``$EVA_FASHION_MNIST_DIR`` names. Both readers return uint8 images (N, 1, H, W) and int64 labels (N,).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from eva_core.errors import InvalidConfigError, MissingDataError
from eva_core.paths import cache_dir
from eva_vision.batches import to_model_input

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT",
    "FASHION_MNIST_ENV",
    "fashion_mnist_dir",
    "image_batches",
    "read_digits",
    "read_fashion_mnist",
]

FASHION_MNIST_ENV = "EVA_FASHION_MNIST_DIR"
"""Environment variable naming the folder of the four Fashion-MNIST ``*-ubyte.gz`` (or plain) files."""

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

_SPLITS = {"train": True, "test": False, "t10k": False}


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


def _torchvision_root(source: Path) -> Path:
    """A root folder torchvision's ``FashionMNIST`` reads ``source``'s files from, without downloading.

    torchvision looks for the *uncompressed* files under ``<root>/FashionMNIST/raw/`` and reads them with
    a plain ``open``. The root is a cache folder (``eva_core.paths.cache_dir("fashion-mnist")``, one per
    source folder, never the repository): an uncompressed source file gets a symlink there; a ``.gz``
    one (as Debian ships them) is decompressed there once with torchvision's own ``extract_archive``,
    exactly as its ``download()`` does after fetching, into a temporary name first so that concurrent
    readers never see half a file.

    Raises:
        MissingDataError: a file is in neither form; the message names it.
    """
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import extract_archive

    root = cache_dir("fashion-mnist") / hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    raw = root / "FashionMNIST" / "raw"
    for archive, _ in FashionMNIST.resources:
        plain = archive.removesuffix(".gz")
        if (raw / plain).is_file():
            continue
        if not (source / plain).is_file() and not (source / archive).is_file():
            raise MissingDataError(
                f"{source} holds neither {archive} nor {plain}; set {FASHION_MNIST_ENV} to the Fashion-MNIST folder."
            )
        raw.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=raw) as scratch:
            if (source / plain).is_file():
                (Path(scratch) / plain).symlink_to((source / plain).resolve())
            else:
                extract_archive(str(source / archive), scratch)
            os.replace(Path(scratch) / plain, raw / plain)
    return root


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
    """Fashion-MNIST ``split`` (``"train"``: 60000 images, ``"test"``/``"t10k"``: 10000), read by
    ``torchvision.datasets.FashionMNIST`` (never downloading).

    Args:
        classes: keep only these labels (0-9, unchanged); None keeps all.
        limit: keep the first ``limit`` images (after the class filter), in file order.

    Returns:
        images (N, 1, 28, 28) uint8 and labels (N,) int64.

    Raises:
        InvalidConfigError: unknown ``split``.
        MissingDataError: the folder or a file is missing.
    """
    from torchvision.datasets import FashionMNIST

    train = _SPLITS.get(split)
    if train is None:
        raise InvalidConfigError(f"split={split!r} is invalid: expected 'train' or 'test' (alias 't10k').")
    dataset = FashionMNIST(str(_torchvision_root(fashion_mnist_dir())), train=train, download=False)
    images, labels = dataset.data.unsqueeze(1), dataset.targets.long()  # (N, 1, 28, 28), (N,)
    return _select(images, labels, classes, limit)


def read_digits(classes: Sequence[int] | None = None, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits (shipped with scikit-learn, offline).

    Returns:
        images (N, 1, 8, 8) uint8 scaled from 0-16 to 0-255, and labels (N,) int64.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return _select(images, labels, classes, limit)


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
    """``(images, labels)`` batches, preprocessed once with :func:`eva_vision.to_model_input`.

    Args:
        images: (N, C, H, W) uint8 or float; labels: (N,) int64.
        shuffle: a seeded permutation of the examples before batching (the last batch may be smaller).

    Returns:
        a list of ((B, channels, size, size) float32, (B,) int64).
    """
    if batch_size < 1:
        raise InvalidConfigError(f"batch_size={batch_size!r} is invalid: expected an integer >= 1.")
    if shuffle:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        images, labels = images[order], labels[order]
    x = to_model_input(images, size=size, channels=channels, mean=mean, std=std)
    return [(x[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)]

"""Fashion-MNIST through torchvision's reader (no download, nothing copied into the repository), the digits
images, the tasks and the batching helper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import eva_core.errors
from eva_bench.vision import data
from eva_bench.vision.tasks import get_task
from eva_vision.cli import read_idx


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``EVA_CACHE_DIR``: the torchvision root is built there."""
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fashion_mnist_shapes_labels_and_class_filter(cache: Path) -> None:
    images, labels = data.read_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert torch.bincount(labels).tolist() == [1000] * 10
    subset, sublabels = data.read_fashion_mnist("train", classes=[5, 9], limit=50)
    assert subset.shape == (50, 1, 28, 28) and set(sublabels.tolist()) <= {5, 9}
    assert 0 < images.float().mean() < 255
    raw = next(cache.glob("fashion-mnist/*/FashionMNIST/raw"))  # what torchvision reads
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    ]  # fmt: skip
    folder = data.fashion_mnist_dir()
    torch.testing.assert_close(images[:, 0], torch.from_numpy(read_idx(folder / "t10k-images-idx3-ubyte.gz").copy()))


def test_uncompressed_files_are_linked_not_copied(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original, source = data.fashion_mnist_dir(), tmp_path / "plain"
    source.mkdir()
    for name in (f"{split}-{kind}-ubyte" for split in ("t10k", "train") for kind in ("images-idx3", "labels-idx1")):
        array = read_idx(original / f"{name}.gz")[:20]  # the first 20 examples, uncompressed
        header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
        (source / name).write_bytes(header + array.tobytes())
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(source))
    images, labels = data.read_fashion_mnist("test")
    assert images.shape == (20, 1, 28, 28) and labels.shape == (20,)
    raw = next(cache.glob("fashion-mnist/*/FashionMNIST/raw"))
    assert all((raw / p.name).is_symlink() for p in source.iterdir())


def test_missing_fashion_mnist_names_the_variable_and_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path
) -> None:
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(
        eva_core.errors.MissingDataError, match=r"EVA_FASHION_MNIST_DIR.*apt-get install dataset-fashion-mnist"
    ):
        data.read_fashion_mnist("train")
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz"):
        data.read_fashion_mnist("train")
    with pytest.raises(eva_core.errors.InvalidConfigError, match="split='dev'"):
        data.read_fashion_mnist("dev")


def test_digits_tasks_and_batches() -> None:
    images, labels = data.read_digits()
    assert images.shape == (1797, 1, 8, 8) and int(images.max()) == 255 and set(labels.tolist()) == set(range(10))
    train, dev = get_task("digits").load("train", None), get_task("digits").load("dev", None)
    assert len(train[1]) + len(dev[1]) == 1797
    batches = data.image_batches(images[:10], labels[:10], 4, size=16, channels=3, mean=(0.5,), std=(0.5,))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]
    assert float(batches[0][0].min()) >= -1.0 and float(batches[0][0].max()) <= 1.0
    shuffled = data.image_batches(images[:10], labels[:10], 10, shuffle=True, seed=1)
    assert sorted(shuffled[0][1].tolist()) == sorted(labels[:10].tolist()) and shuffled[0][1].tolist() != labels[:10]
    with pytest.raises(eva_core.errors.InvalidConfigError, match="task='nope'"):
        get_task("nope")


def test_fmnist_5_9_is_classes_5_to_9_remapped(cache: Path) -> None:
    images, labels = get_task("fmnist-5-9").load("dev", 100)
    assert images.shape == (100, 1, 28, 28) and set(labels.tolist()) <= set(range(5))

"""The Fashion-MNIST IDX reader, the digits images, the batching helper and bad batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import eva_core
import eva_vision


def test_fashion_mnist_shapes_labels_and_class_filter() -> None:
    images, labels = eva_vision.read_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert torch.bincount(labels).tolist() == [1000] * 10
    subset, sublabels = eva_vision.read_fashion_mnist("train", classes=[5, 9], limit=50)
    assert subset.shape == (50, 1, 28, 28) and set(sublabels.tolist()) <= {5, 9}
    assert 0 < images.float().mean() < 255


def test_missing_fashion_mnist_names_the_variable_and_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(eva_vision.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(
        eva_core.MissingDataError, match=r"EVA_FASHION_MNIST_DIR.*apt-get install dataset-fashion-mnist"
    ):
        eva_vision.read_fashion_mnist("train")
    monkeypatch.setenv(eva_vision.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz"):
        eva_vision.read_fashion_mnist("train")


def test_digits_and_batches() -> None:
    images, labels = eva_vision.read_digits()
    assert images.shape == (1797, 1, 8, 8) and int(images.max()) == 255 and set(labels.tolist()) == set(range(10))
    train, dev = eva_vision.get_task("digits").load("train", None), eva_vision.get_task("digits").load("dev", None)
    assert len(train[1]) + len(dev[1]) == 1797
    batches = eva_vision.image_batches(images[:10], labels[:10], 4, size=16, channels=3, mean=(0.5,), std=(0.5,))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]
    assert float(batches[0][0].min()) >= -1.0 and float(batches[0][0].max()) <= 1.0


@pytest.mark.parametrize("batch", ["not a batch", torch.randn(4, 10), {"input_ids": torch.ones(2, 3)}])
def test_a_batch_without_images_gets_a_clear_error(batch: object) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(eva_core.UnsupportedBatchError, match=r"no \(B, C, H, W\) image tensor.*ImageBatch"):
        eva_vision.init(model, [batch, batch], rank=1, progress=False)


def test_text_and_peft_models_are_not_claimed() -> None:
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert eva_vision.model_kind(bert) is None
    assert eva_vision.model_kind(nn.Sequential(nn.Linear(4, 4))) is None
    assert eva_vision.model_kind(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))) is None

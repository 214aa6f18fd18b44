"""A "DINOv2 architecture, pretrained locally" model: a small transformers ``Dinov2ForImageClassification``
trained here, supervised, on Fashion-MNIST classes 0-4.

This is supervised pretraining of the DINOv2 *architecture* (patch embedding, CLS token, LayerScale
blocks, the CLS + mean-patch classifier), not DINO self-distillation and not Meta's DINOv2 weights: the
machines this project runs on have no pretrained ViT weights offline. Fine-tuning it on classes 5-9
(``eva_bench.vision.recipe.finetune(..., task="fmnist-5-9")``) is then a transfer to unseen classes.

The model is saved with ``save_pretrained`` under ``eva_core.paths.cache_dir("dinov2-arch-fmnist04")``
(:data:`eva_vision.cli.DINOV2_LOCAL_CACHE`) in a subfolder named after a hash of :class:`PretrainSettings`,
with its image processor (``preprocessor_config.json``: size and normalization, which ``eva-lora fit
dinov2-local`` reads) and the settings and the reached accuracy in ``eva_pretrain.json``; a call with other
settings builds (and keeps) its own model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from eva_core.errors import MissingDataError
from eva_core.paths import cache_dir
from eva_vision.cli import DINOV2_LOCAL_CACHE

from ..training import train
from .data import image_batches, read_fashion_mnist
from .evaluation import evaluate

__all__ = [
    "FMNIST_MEAN",
    "FMNIST_STD",
    "LABEL",
    "PretrainSettings",
    "build_model",
    "load_pretrained",
    "main",
    "pretrain",
    "pretrain_record",
    "pretrained_dir",
    "save_processor",
]

_log = logging.getLogger(__name__)

LABEL = "DINOv2 architecture, pretrained locally"
"""How this model is named everywhere (it is not Meta's DINOv2)."""

FMNIST_MEAN: tuple[float] = (0.2860,)
FMNIST_STD: tuple[float] = (0.3530,)
_RECORD = "eva_pretrain.json"
_PROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class PretrainSettings:
    """The architecture and the supervised training run (every field is part of the cache key).

    Attributes:
        image_size, patch_size: 28 x 28 grey images in 4 x 4 patches: T = 1 + 49 tokens.
        hidden_size, layers, heads, mlp_ratio: the ViT (about 0.8 M parameters at the defaults).
        classes: the Fashion-MNIST labels trained on (remapped to 0..len-1).
        steps, batch_size, lr, weight_decay, seed: AdamW with linear warm-up and decay.
        train_limit: use the first this many training images of ``classes`` (None: all 30000).
    """

    image_size: int = 28
    patch_size: int = 4
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    train_limit: int | None = None

    def key(self) -> str:
        """A short hash of every field: the cache subfolder's name."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_model(settings: PretrainSettings, num_labels: int | None = None) -> nn.Module:
    """A randomly initialized ``Dinov2ForImageClassification`` of ``settings``' size (1 input channel)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    fields: dict[str, Any] = {  # num_labels is a PretrainedConfig field its stubs do not list
        "image_size": settings.image_size,
        "patch_size": settings.patch_size,
        "num_channels": 1,
        "hidden_size": settings.hidden_size,
        "num_hidden_layers": settings.layers,
        "num_attention_heads": settings.heads,
        "mlp_ratio": settings.mlp_ratio,
        "num_labels": num_labels or len(settings.classes),
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    config = Dinov2Config(**fields)
    return Dinov2ForImageClassification(config)


def pretrained_dir(settings: PretrainSettings | None = None) -> Path:
    """Where the model of ``settings`` is (or would be) saved."""
    return cache_dir(DINOV2_LOCAL_CACHE) / (settings or PretrainSettings()).key()


def save_processor(folder: Path, settings: PretrainSettings) -> None:
    """Write the model's image processor (transformers' ``BitImageProcessor``, as DINOv2 checkpoints use):
    resize to ``image_size``, scale to [0, 1], normalize with :data:`FMNIST_MEAN` / :data:`FMNIST_STD`."""
    from transformers import BitImageProcessor

    processor = BitImageProcessor(
        do_resize=True,
        size={"height": settings.image_size, "width": settings.image_size},
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(FMNIST_MEAN),
        image_std=list(FMNIST_STD),
        do_convert_rgb=False,
    )
    processor.save_pretrained(folder)


def _remap(labels: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    table = torch.full((10,), -1, dtype=torch.long)
    table[list(classes)] = torch.arange(len(classes))
    return table[labels]  # (N,)


def pretrain(settings: PretrainSettings | None = None, *, dev_limit: int = 2000, progress: bool = False) -> Path:
    """Train the model of ``settings`` and save it (overwriting any model saved for the same settings).

    Returns:
        the folder, holding the transformers model, its image processor and ``eva_pretrain.json``
        (settings, dev accuracy on the first ``dev_limit`` test images of the classes, minutes).
    """
    settings = settings or PretrainSettings()
    torch.manual_seed(settings.seed)
    model = build_model(settings)
    train_images, train_labels = read_fashion_mnist("train", settings.classes, settings.train_limit)
    dev_images, dev_labels = read_fashion_mnist("test", settings.classes, dev_limit)
    norm: dict[str, Any] = {"size": settings.image_size, "mean": FMNIST_MEAN, "std": FMNIST_STD}
    remapped = _remap(train_labels, settings.classes)
    batches = image_batches(train_images, remapped, settings.batch_size, shuffle=True, seed=settings.seed, **norm)
    dev = image_batches(dev_images, _remap(dev_labels, settings.classes), 256, **norm)
    started = time.perf_counter()
    curve = train(
        model,
        batches,
        lambda m, batch: F.cross_entropy(m(pixel_values=batch[0]).logits, batch[1]),
        lambda m: evaluate(m, dev, "transformers"),
        steps=settings.steps,
        eval_at=[settings.steps],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        progress=progress,
    )
    minutes = (time.perf_counter() - started) / 60
    folder = pretrained_dir(settings)
    model.save_pretrained(folder)  # type: ignore[operator]  # a transformers PreTrainedModel
    save_processor(folder, settings)
    record: dict[str, Any] = {
        "label": LABEL,
        "settings": dataclasses.asdict(settings),
        "dev": dict(curve[-1].metrics),
        "dev_images": len(dev_labels),
        "minutes": round(minutes, 2),
        "torch": torch.__version__,
    }
    (folder / _RECORD).write_text(json.dumps(record, indent=2))
    _log.info(
        "%s: dev accuracy %.4f after %.1f minutes, saved to %s", LABEL, record["dev"]["accuracy"], minutes, folder
    )
    return folder


def pretrain_record(folder: Path) -> dict[str, Any] | None:
    """The ``eva_pretrain.json`` of a saved model, or None when there is none."""
    path = folder / _RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def load_pretrained(
    settings: PretrainSettings | None = None, *, num_labels: int | None = None, build: bool = True
) -> nn.Module:
    """The model of ``settings`` from the cache, pretrained first if missing (when ``build``). A model
    saved before its image processor was saved with it gets one written now.

    Args:
        num_labels: replace the classifier with a new one of this many classes (initialized by
            transformers from the current torch seed); None keeps the pretraining head.

    Raises:
        eva_core.errors.MissingDataError: not cached and ``build=False``.
    """
    from transformers import Dinov2ForImageClassification

    settings = settings or PretrainSettings()
    folder = pretrained_dir(settings)
    record = pretrain_record(folder)
    if record is None or record.get("settings") != json.loads(json.dumps(dataclasses.asdict(settings))):
        if not build:
            raise MissingDataError(
                f"the {LABEL} model for these settings is not in {folder}; run benchmarks/pretrain_vision.py "
                "or load_pretrained(build=True)."
            )
        folder = pretrain(settings)
    if not (folder / _PROCESSOR).is_file():
        save_processor(folder, settings)
    if num_labels is None:
        return Dinov2ForImageClassification.from_pretrained(folder)
    return Dinov2ForImageClassification.from_pretrained(folder, num_labels=num_labels, ignore_mismatched_sizes=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``benchmarks/pretrain_vision.py``: build the model of the default settings (with ``--steps``...
    changed) unless it is cached (``--force`` rebuilds it), then print its folder and dev accuracy."""
    defaults = PretrainSettings()
    parser = argparse.ArgumentParser(description="Pretrain the " + LABEL + " model (Fashion-MNIST classes 0-4).")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="retrain even if a model for these settings is cached")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = dataclasses.replace(defaults, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    folder = pretrained_dir(settings)
    if args.force or pretrain_record(folder) is None:
        folder = pretrain(settings, progress=sys.stderr.isatty())
    elif not (folder / _PROCESSOR).is_file():
        save_processor(folder, settings)  # saved before models carried their image processor
    record = pretrain_record(folder) or {}
    dev = record.get("dev", {})
    print(f"{LABEL}: {folder}")
    print("| dev accuracy | dev loss | minutes | steps | batch |\n|---|---|---|---|---|")
    print(
        f"| {dev.get('accuracy', float('nan')):.4f} | {dev.get('loss', float('nan')):.4f} | "
        f"{record.get('minutes')} | {settings.steps} | {settings.batch_size} |"
    )
    print(json.dumps(record.get("settings", {})))

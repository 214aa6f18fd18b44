"""The image fine-tuning recipe: a model, a task and an init method in; a :class:`eva_bench.RunRecord` out.

The vision part of :func:`eva_bench.recipe.run`: it loads the model with a new head for the task,
prepares the task's batches, the loss and the evaluation; the shared recipe gives every method the same
layers (the vision plugin's targets), the same ``LoraConfig`` (the new head in ``modules_to_save``) and
the same training loop. BatchNorm layers keep their pretrained statistics while training
(:func:`freeze_batch_norm`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from eva_core.errors import InvalidConfigError
from eva_vision import load_efficientnet_lite0
from eva_vision.architectures import model_kind
from eva_vision.cli import MODEL_ALIASES
from eva_vision.efficientnet import INPUT_SIZE, MEAN, STD

from ..recipe import Task, run
from ..records import RunRecord
from ..splits import carve
from ..training import shuffled_epochs
from .data import image_batches
from .evaluation import evaluate, logits
from .pretraining import FMNIST_MEAN, FMNIST_STD, load_pretrained
from .tasks import VisionTask, get_task

__all__ = ["MODEL_ALIASES", "ImageSpec", "finetune", "freeze_batch_norm", "load_model"]

ImageSpec = tuple[int, int, Sequence[float], Sequence[float]]
"""(size, channels, mean, std) a model expects."""


def freeze_batch_norm(model: nn.Module) -> nn.Module:
    """Put every ``BatchNorm`` layer of ``model`` in eval mode (running statistics, no updates); returns it.

    Call it after ``model.train()`` in each step's loss function: a LoRA fine-tune leaves the backbone's
    buffers as pretrained, so the adapter saved by ``save_pretrained`` (which holds no BN statistics)
    reloads onto the original base model with identical outputs, and the step-0 output equals the base's.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def load_model(
    name: str, task: str | VisionTask, *, seed: int = 0, image_size: int | None = None
) -> tuple[nn.Module, ImageSpec]:
    """``(model, (size, channels, mean, std))``: the model with a new head for the task's classes (drawn
    from ``seed``), and the input it takes.

    Raises:
        InvalidConfigError: unknown name.
    """
    spec = get_task(task)
    key = name.lower()
    if key == "dinov2-local":
        torch.manual_seed(seed)
        model = load_pretrained(num_labels=spec.num_classes)
        config: Any = model.config
        return model.eval(), (image_size or int(config.image_size), 1, FMNIST_MEAN, FMNIST_STD)
    if key == "efficientnet-lite0":
        return load_efficientnet_lite0(spec.num_classes, seed=seed), (image_size or INPUT_SIZE, 3, MEAN, STD)
    raise InvalidConfigError(f"model={name!r} is not a known vision model; pick one of {sorted(MODEL_ALIASES)}.")


def finetune(
    model: str | nn.Module,
    task: str | VisionTask,
    method: str = "eva",
    *,
    steps: int = 200,
    eval_at: Sequence[int] | None = None,
    seed: int = 0,
    rank: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 32,
    train_limit: int | None = None,
    dev_limit: int | None = None,
    validation: int = 0,
    eva_overrides: Mapping[str, Any] | None = None,
    image_spec: ImageSpec | None = None,
    image_size: int | None = None,
) -> RunRecord:
    """Initialize adapters with ``method`` and fine-tune on ``task``; evaluate on its dev split.

    Args:
        model: ``"dinov2-local"`` or ``"efficientnet-lite0"`` (:data:`MODEL_ALIASES`; a new head for the
            task), or a loaded model with its head already sized (then pass ``image_spec``).
        task: ``"fmnist-5-9"`` or ``"digits"`` (:data:`eva_bench.vision.tasks.TASKS`).
        method: any of :data:`eva_bench.ALL_METHODS` (see :func:`eva_bench.initialize`).
        steps: optimizer steps; ``eval_at`` the steps to evaluate at (default: 0, and every quarter).
        seed: seeds the head, random adapters, and the order of training examples.
        rank: r of every adapted layer (EVA: the average; ranks are redistributed); default: the vision
            plugin's (``eva_default_config``).
        lr: AdamW learning rate (adapters and head).
        train_limit, dev_limit: use only the first images of each split.
        validation: images carved from the train split (the ``validation`` after the first ``train_limit``;
            without a limit, its last ones) on which the curve is scored; the dev split is then scored once,
            after the last step (the record's ``held_out``). 0: the curve is on the dev split.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA beyond the domain's defaults.
        image_spec: ``(size, channels, mean, std)`` for a loaded ``model``.
        image_size: input size of an aliased model (default: 28 for ``dinov2-local``, 64 for EfficientNet).

    Returns:
        the run (headline metric ``accuracy``; ``loss`` too). For EVA, ``extra`` holds ``ranks``,
        ``eva_batches``, ``eva_seconds`` and ``explained_variance``.

    Raises:
        InvalidConfigError: an unknown model or task name, or a loaded ``model`` without ``image_spec``.
    """
    spec = get_task(task)
    torch.manual_seed(seed)
    if isinstance(model, str):
        model, image_spec = load_model(model, spec, seed=seed, image_size=image_size)
    if image_spec is None:
        raise InvalidConfigError(
            "finetune(model=<nn.Module>) needs image_spec=(size, channels, mean, std); or pass a model name."
        )
    prepared = _task(
        model,
        image_spec,
        spec,
        seed=seed,
        batch_size=batch_size,
        limits=(train_limit, dev_limit),
        validation=validation,
    )
    return run(prepared, method, seed=seed, rank=rank, steps=steps, lr=lr, eval_at=eval_at, eva_overrides=eva_overrides)


def _task(
    model: nn.Module,
    image_spec: ImageSpec,
    spec: VisionTask,
    *,
    seed: int,
    batch_size: int,
    limits: tuple[int | None, int | None],
    validation: int = 0,
) -> Task:
    """The shared recipe's :class:`eva_bench.recipe.Task`: the task's train images in batches of
    ``batch_size`` (examples in a seeded order; training visits the batches in a new order every epoch), its
    dev images in batches of twice that, the cross-entropy
    with batch norm frozen, and accuracy (on the last ``validation`` train images when there are some,
    the dev images then scored once at the end)."""
    size, channels, mean, std = image_spec
    kind = model_kind(model)
    prep: dict[str, Any] = {"size": size, "channels": channels, "mean": mean, "std": std}
    images, labels = spec.load("train", None if limits[0] is None else limits[0] + validation)
    kept, carved = carve(range(len(labels)), validation)
    train_batches = image_batches(images[kept], labels[kept], batch_size, shuffle=True, seed=seed, **prep)
    dev_batches = image_batches(*spec.load("dev", limits[1]), 2 * batch_size, **prep)
    validation_batches = image_batches(images[carved], labels[carved], 2 * batch_size, **prep) if validation else []

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits(freeze_batch_norm(m), batch[0], kind), batch[1])

    return Task(
        model=model,
        batches=train_batches,
        loss_fn=loss,
        evaluate=lambda m: evaluate(m, validation_batches or dev_batches, kind),
        held_out=(lambda m: evaluate(m, dev_batches, kind)) if validation else None,
        metric="accuracy",
        domain="vision",
        eva_overrides={"seed": seed},
        train_batches=shuffled_epochs(train_batches, seed),  # EVA reads them in order; training reshuffles
    )

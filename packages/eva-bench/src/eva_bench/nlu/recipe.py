"""The GLUE fine-tuning run: a model, a task and an init method in; a :class:`eva_bench.RunRecord` out.

The nlu part of :func:`eva_bench.recipe.run`: the encoder with a new head sized for the task, the task's
labelled rows tokenized into batches (training batches shuffled once by the seed), the sequence
classifier's loss and the task's GLUE metrics on the dev rows. Layers, ``LoraConfig`` fields and EVA
settings are the nlu plugin's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from eva_nlu import batches as make_batches
from eva_nlu import load_model
from eva_nlu.glue import GlueTask, get_task

from ..recipe import Task, run
from ..records import RunRecord
from ..splits import carve
from ..training import EvaluateFn, shuffled_epochs
from .data import labelled_rows
from .metrics import glue_metrics, scoring

__all__ = ["evaluate", "finetune"]


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
    rank: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 32,
    max_length: int = 128,
    train_limit: int | None = None,
    dev_limit: int | None = None,
    validation: int = 0,
    eva_overrides: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Initialize adapters with ``method`` and fine-tune on ``task``; evaluate on ``dev``.

    Args:
        model: a name or path (see :func:`eva_nlu.load_model`) or a loaded sequence classifier (then
            pass ``tokenizer``).
        task: a GLUE task name (``sst2``, ``mrpc``, ``cola``, ``stsb``...).
        method: any of :data:`eva_bench.ALL_METHODS` (see :func:`eva_bench.initialize`).
        train, dev: a TSV/CSV/JSONL path, or a list of dicts with the task's columns and ``label``.
        steps: optimizer steps; ``eval_at`` the steps to evaluate at (default: 0 and every quarter).
        seed: seeds the head, random adapters, and the order of training batches.
        rank: r of every adapted layer (EVA: the average; ranks are redistributed); default the domain's.
        lr: AdamW learning rate (adapters and head).
        train_limit, dev_limit: use only the first rows of each split.
        validation: rows carved from the training file (the ``validation`` rows after the first
            ``train_limit``; without a limit, its last ones) on which the curve is scored; ``dev`` is then
            scored once, after the last step (the record's ``held_out``). 0: the curve is on ``dev``.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA beyond the domain's defaults.

    Returns:
        the run: init time, trainable parameters, the metric curve (headline metric: the task's).
    """
    spec = get_task(task)
    torch.manual_seed(seed)  # the new head
    if isinstance(model, str):
        model, tokenizer = load_model(model, spec)
    if tokenizer is None:
        raise ValueError("finetune(model=<nn.Module>) needs tokenizer=...; or pass the model's name or path.")
    train_rows, validation_rows = carve(
        labelled_rows(train, spec, limit=None if train_limit is None else train_limit + validation), validation
    )
    train_batches = make_batches(
        train_rows, tokenizer, spec, batch_size, max_length=max_length, shuffle=True, seed=seed, with_labels=True
    )

    def scorer(rows: Sequence[Mapping[str, Any]]) -> EvaluateFn:
        batches = make_batches(rows, tokenizer, spec, 2 * batch_size, max_length=max_length, with_labels=True)
        return lambda m: evaluate(m, batches, spec)

    dev_scorer = scorer(labelled_rows(dev, spec, limit=dev_limit))
    nlu_task = Task(
        model=model,
        batches=train_batches,
        loss_fn=_loss,
        evaluate=scorer(validation_rows) if validation else dev_scorer,
        held_out=dev_scorer if validation else None,
        metric=scoring(spec).headline,
        domain="nlu",
        eva_overrides={"seed": seed},
        train_batches=shuffled_epochs(train_batches, seed),  # EVA reads them in order; training reshuffles
    )
    return run(nlu_task, method, seed=seed, rank=rank, steps=steps, lr=lr, eval_at=eval_at, eva_overrides=eva_overrides)


def _task_loss(logits: torch.Tensor, labels: torch.Tensor, spec: GlueTask) -> torch.Tensor:
    """The task's loss as transformers' sequence classifiers compute it: MSE for regression, else
    cross-entropy. ``logits``: (B, num_labels); ``labels``: (B,)."""
    if spec.is_regression:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def _loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss

"""The one fine-tuning recipe every domain runs: a domain prepares a :class:`Task`, the recipe initializes
adapters by method name, trains, evaluates and records.

Every method gets the same layers (the domain's ``eva_target_modules`` unless the task names others), the
same average rank, the same ``LoraConfig`` (the domain's ``eva_lora_fields``: its head in
``modules_to_save``, its task type, ``fan_in_fan_out``), the same batches in the same order and the same
training loop, so a comparison differs only in how the adapters start. EVA's settings are the domain's
(``eva_default_config``) with the task's and the caller's overrides on top.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import eva_core
from eva_core.adapters import domain_lora_config

from .cost import measure_cost
from .initializations import initialize
from .records import RunRecord
from .training import EvaluateFn, LossFn, score, train

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = ["Task", "default_eval_steps", "run"]


@dataclass(frozen=True)
class Task:
    """What a domain prepares for one run: the model, its data and how to score it.

    Attributes:
        model: the base model (wrapped in place by the initialization).
        batches: training batches; read by the data-driven initializations (EVA, CorDA, LoRA-GA) and, unless
            ``train_batches`` is given, by the training loop, epoch after epoch (a list, a DataLoader or an
            endless iterator).
        loss_fn: ``(model, batch) -> scalar loss``, the training loss.
        evaluate: ``model -> {metric: value}`` on held-out data.
        metric: the headline metric among ``evaluate``'s keys.
        domain: the eva domain serving ``model`` (``nlu``, ``llm``, ``vision``, ``rl``).
        target_modules: the layers every method adapts; ``None``: the domain's.
        lora_config: alpha, dropout... shared by every method (with ``fan_in_fan_out`` where the domain
            needs it); ``None``: the domain's fields, ``lora_alpha = r``.
        eva_overrides: :class:`eva_core.EvaConfig` fields the domain's recipe sets for EVA (e.g. ``seed``).
        extra: what the record keeps about the run's settings.
        train_batches: what the training loop reads, when it differs from ``batches`` (e.g.
            :func:`eva_bench.shuffled_epochs` of them: a new order every epoch); ``None``: ``batches``.
        held_out: ``model -> {metric: value}`` scored once, after the last step (the record's
            ``held_out``), when ``evaluate`` scores a validation split carved from the training data;
            ``None``: ``evaluate`` is the held-out score.
    """

    model: nn.Module
    batches: Iterable[Any]
    loss_fn: LossFn
    evaluate: EvaluateFn
    metric: str
    domain: str
    target_modules: Sequence[str] | str | None = None
    lora_config: LoraConfig | None = None
    eva_overrides: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    train_batches: Iterable[Any] | None = None
    held_out: EvaluateFn | None = None


def default_eval_steps(steps: int) -> list[int]:
    """0, then every quarter of ``steps``."""
    return sorted({0, *(steps * k // 4 for k in range(1, 5))})


def run(
    task: Task,
    method: str,
    *,
    seed: int,
    rank: int | None = None,
    steps: int,
    lr: float,
    eval_at: Sequence[int] | None = None,
    eva_overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> RunRecord:
    """Initialize ``task.model``'s adapters with ``method``, train ``steps`` steps and record the curve.

    Args:
        task: the domain's model, data and evaluation.
        method: any of :data:`eva_bench.ALL_METHODS` (see :func:`eva_bench.initialize`).
        seed: seeds the random adapters (and everything else drawn after this call).
        rank: r of every adapted layer (EVA: the average; ranks are redistributed); default: the domain's
            (``eva_default_config``).
        steps: optimizer steps; ``eval_at`` the steps to evaluate at (default :func:`default_eval_steps`).
        lr: AdamW peak learning rate.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA beyond the domain's and the task's.

    Returns:
        the run: init time and peak memory, trainable parameters, the metric curve (and ``held_out``, when
        the task has one); for EVA ``extra`` holds its ranks, batches consumed and spectra.
    """
    hooks = eva_core.plugin_manager().hooks(task.domain)
    rank = hooks.config(task.model, None, {}).rank if rank is None else rank
    layers = hooks.layers(
        task.model, hooks.config(task.model, None, {"rank": rank, "target_modules": task.target_modules})
    )
    targets = list(layers) if task.target_modules is None else task.target_modules
    lora_config = domain_lora_config(task.lora_config, hooks.lora_fields(task.model, list(layers)), rank)
    overrides = {"domain": task.domain, "progress": progress, **task.eva_overrides, **(eva_overrides or {})}
    torch.manual_seed(seed)
    with measure_cost() as init_cost:
        peft_model = initialize(
            task.model,
            method,
            task.batches,
            rank=rank,
            target_modules=targets,
            lora_config=lora_config,
            eva_overrides=overrides,
            loss_fn=task.loss_fn,
            steps=steps,
        )
    started = time.perf_counter()
    schedule = list(eval_at) if eval_at is not None else default_eval_steps(steps)
    training = task.batches if task.train_batches is None else task.train_batches
    curve = train(
        peft_model, training, task.loss_fn, task.evaluate, steps=steps, eval_at=schedule, lr=lr, progress=progress
    )
    held_out = None if task.held_out is None else score(peft_model, task.held_out)
    return RunRecord.of(
        peft_model,
        method=method,
        seed=seed,
        metric=task.metric,
        init_seconds=init_cost.seconds,
        init_peak_bytes=init_cost.peak_bytes,
        train_seconds=time.perf_counter() - started,
        curve=curve,
        extra=dict(task.extra),
        held_out=held_out,
    )

"""``finetune``: one LoRA fine-tuning run of a pretrained Decision Transformer on a new task.

The run:

1. loads the pretrained model (an alias such as ``dt-halfcheetah``, built by
   ``benchmarks/pretrain_rl.py``) and the target task's cached dataset (``walker2d``); the episodes are
   split once (a fixed permutation, independent of ``seed``): the last ``dev_limit`` are held out for the
   action loss, the first ``train_limit`` of the rest are trained on;
2. wraps the model in LoRA adapters initialized by ``method`` on the GPT-2 projections (EVA measures
   the training batches, padded timesteps excluded), the embedding and prediction layers trained in
   full, and times it;
3. trains with :func:`eva_core.train` on the action MSE of real timesteps and evaluates at ``eval_at``:
   ``episodes`` rollouts conditioned on the dataset's best return (``return``, and
   ``normalized_return`` = ``100 * (R - min) / (max - min)`` over the dataset's episode returns) and the
   held-out action MSE (``loss``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from peft import LoraConfig
from torch import nn

from eva_core import InvalidConfigError, RunRecord, initialize, measure_cost, train

from . import architectures
from .api import DEFAULTS, DOMAIN, default_lora_config
from .evaluation import action_loss, held_out_loss, normalized_return, rollout_returns
from .pretrain import load_pretrained
from .tasks import Task, TaskData, load_task_data
from .trajectories import trajectory_batches

__all__ = ["METRICS", "finetune"]

METRICS: tuple[str, ...] = ("normalized_return", "return", "loss")
"""Metrics :func:`finetune` records at each evaluation; ``normalized_return`` is the headline."""


def finetune(
    model: str | nn.Module = "dt-halfcheetah",
    task: str | Task | TaskData = "walker2d",
    method: str = "eva",
    *,
    steps: int = 300,
    eval_at: Sequence[int] | None = None,
    seed: int = 0,
    rank: int = 8,
    lr: float = 1e-3,
    batch_size: int = 32,
    context: int | None = None,
    train_limit: int | None = None,
    dev_limit: int = 16,
    episodes: int = 5,
    dev_batches: int = 4,
    target_return: float | None = None,
    metric: str = "normalized_return",
    lora_config: LoraConfig | None = None,
    eva_overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> RunRecord:
    """Fine-tune LoRA adapters initialized by ``method`` and record the evaluation curve.

    Args:
        model: a pretrained alias (``dt-halfcheetah``) or a ``DecisionTransformerModel`` (wrapped in place).
        task: a task alias (``walker2d``), a :class:`Task` (its cached dataset is loaded) or a loaded
            :class:`TaskData`.
        method: any of :data:`eva_core.ALL_METHODS` (see :func:`eva_core.initialize`).
        steps: optimizer steps; ``eval_at``: steps after which to evaluate (default ``(0, steps)``).
        rank: the (average) LoRA rank. ``lr``: AdamW peak learning rate. ``batch_size``: windows a step.
        context: K, timesteps per window (default: the pretrained model's, else 20).
        train_limit: training episodes (default: all not held out). ``dev_limit``: held-out episodes.
        episodes: rollouts per evaluation. ``dev_batches``: held-out batches for the loss.
        target_return: the return rollouts are conditioned on (default: the dataset's best).
        metric: the headline metric, one of :data:`METRICS`.
        lora_config: shared by every method; default :func:`eva_rl.default_lora_config`.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA methods (``max_steps``, ``tau``...).

    Returns:
        the :class:`eva_core.RunRecord`; for EVA, ``extra`` holds ``ranks``, ``eva_batches``, ``eva_seconds``.

    Raises:
        InvalidConfigError: an unknown ``metric`` or ``method``, or too few episodes for the split.
    """
    if metric not in METRICS:
        raise InvalidConfigError(f"metric={metric!r} is not one of {METRICS}; pick 'normalized_return'.")
    module, pretrained = _model(model)
    data = task if isinstance(task, TaskData) else load_task_data(task)
    window = context or int(pretrained.get("settings", {}).get("context", 20))
    train_set, dev_set = _split(data, train_limit, dev_limit)
    scale = data.task.return_scale
    torch.manual_seed(seed)
    loader = trajectory_batches(
        train_set, context=window, batch_size=batch_size, batches=max(1, steps), seed=seed, return_scale=scale,
        stats=data.stats,
    )  # fmt: skip
    dev = list(
        trajectory_batches(
            dev_set, context=window, batch_size=batch_size, batches=dev_batches, seed=10_000, return_scale=scale,
            stats=data.stats,
        )
    )  # fmt: skip
    targets = architectures.target_modules(module)
    config = lora_config or default_lora_config(module, rank)
    overrides = {"domain": DOMAIN, "rho": DEFAULTS["rho"], "tau": DEFAULTS["tau"], "progress": progress}
    with measure_cost() as init_cost:
        peft_model = initialize(
            module,
            method,
            loader,
            rank=rank,
            target_modules=targets,
            lora_config=config,
            eva_overrides={**overrides, **(eva_overrides or {})},
            loss_fn=action_loss,
            steps=steps,
        )
    goal = data.high if target_return is None else target_return

    def evaluate(adapted: nn.Module) -> dict[str, float]:
        returns = rollout_returns(
            adapted,
            data.task.env_id,
            stats=data.stats,
            target_return=goal,
            return_scale=scale,
            context=window,
            episodes=episodes,
            max_episode_steps=data.task.max_episode_steps,
            env_kwargs=data.task.env_kwargs,
        )
        mean = float(np.mean(returns))
        return {
            "normalized_return": normalized_return(mean, data.low, data.high),
            "return": mean,
            "loss": held_out_loss(adapted, dev),
        }

    schedule = tuple(eval_at) if eval_at is not None else (0, steps)
    started = time.perf_counter()
    curve = train(peft_model, loader, action_loss, evaluate, steps=steps, eval_at=schedule, lr=lr, progress=progress)
    train_seconds = time.perf_counter() - started
    extra: dict[str, Any] = {
        "task": data.task.name,
        "train_episodes": len(train_set),
        "dev_episodes": len(dev_set),
        "context": window,
        "batch_size": batch_size,
        "lr": lr,
        "target_return": goal,
        "dataset_low": data.low,
        "dataset_high": data.high,
    }
    return RunRecord.of(
        peft_model,
        method=method,
        seed=seed,
        metric=metric,
        init_seconds=init_cost.seconds,
        init_peak_bytes=init_cost.peak_bytes,
        train_seconds=train_seconds,
        curve=curve,
        extra=extra,
    )


def _model(model: str | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(model, nn.Module):
        return model, {}
    return load_pretrained(model)


def _split(data: TaskData, train_limit: int | None, dev_limit: int) -> tuple[list[Any], list[Any]]:
    order = np.random.default_rng(0).permutation(len(data.episodes))
    episodes = [data.episodes[i] for i in order]
    if dev_limit < 1 or dev_limit >= len(episodes):
        raise InvalidConfigError(
            f"dev_limit={dev_limit} must be in [1, {len(episodes) - 1}] (the dataset has {len(episodes)} episodes)."
        )
    rest, dev = episodes[:-dev_limit], episodes[-dev_limit:]
    if train_limit is not None:
        if train_limit < 1:
            raise InvalidConfigError(f"train_limit={train_limit} must be >= 1 (or None for all).")
        rest = rest[:train_limit]
    return rest, dev

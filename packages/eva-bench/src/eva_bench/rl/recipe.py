"""``finetune``: one LoRA fine-tuning run of a pretrained Decision Transformer on a new task, the rl part of
the shared recipe (:func:`eva_bench.recipe.run`).

The rl part:

1. loads the pretrained model (an alias such as ``dt-halfcheetah``, built by
   ``benchmarks/pretrain_rl.py``) and the target task's cached dataset (``walker2d``); the episodes are
   split once (a fixed permutation, independent of ``seed``): the last ``dev_limit`` are held out for the
   action loss, the first ``train_limit`` of the rest are trained on;
2. cuts the training batches (random K-step windows, ``seed`` draws them) and scores a model by
   ``episodes`` rollouts conditioned on the dataset's best return (``return``, and ``normalized_return`` =
   ``100 * (R - min) / (max - min)`` over the dataset's episode returns) and the held-out action MSE
   (``loss``).

The shared recipe does the rest: adapters initialized by ``method`` on the rl plugin's layers (the GPT-2
projections; EVA measures the training batches, padded timesteps excluded) with its ``LoraConfig`` fields
(the embedding and prediction layers trained in full, ``fan_in_fan_out``), the training on the action MSE
of real timesteps and the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from peft import LoraConfig
from torch import nn

from eva_core.errors import InvalidConfigError
from eva_rl import load_pretrained, trajectory_batches
from eva_rl.plugin import DOMAIN

from .. import recipe
from ..records import RunRecord
from ..splits import carve
from ..training import EvaluateFn
from .evaluation import action_loss, held_out_loss, normalized_return, rollout_returns
from .tasks import Task, TaskData, load_task_data

__all__ = ["HELD_OUT_SEED", "METRICS", "VALIDATION_SEED", "finetune"]

HELD_OUT_SEED = 10_000
"""Held-out rollout ``i`` resets the environment with ``HELD_OUT_SEED + i``."""
VALIDATION_SEED = 20_000
"""Validation rollout ``i`` resets the environment with ``VALIDATION_SEED + i`` (disjoint from the held-out ones)."""

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
    rank: int | None = None,
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
    validation: int = 0,
    held_out_episodes: int | None = None,
) -> RunRecord:
    """Fine-tune LoRA adapters initialized by ``method`` and record the evaluation curve.

    Args:
        model: a pretrained alias (``dt-halfcheetah``) or a ``DecisionTransformerModel`` (wrapped in place).
        task: a task alias (``walker2d``), a :class:`Task` (its cached dataset is loaded) or a loaded
            :class:`TaskData`.
        method: any of :data:`eva_bench.ALL_METHODS` (see :func:`eva_bench.initialize`).
        steps: optimizer steps; ``eval_at``: steps after which to evaluate (default ``(0, steps)``).
        rank: the (average) LoRA rank (default: the domain's). ``lr``: AdamW peak learning rate.
            ``batch_size``: windows a step.
        context: K, timesteps per window (default: the pretrained model's, else 20).
        train_limit: training episodes (default: all not held out). ``dev_limit``: held-out episodes.
        episodes: rollouts per evaluation. ``dev_batches``: held-out batches for the loss.
        validation: training episodes set apart (the last ``validation`` of the training ones) on which the
            curve is scored, by the loss on them and rollouts from other environment seeds
            (:data:`VALIDATION_SEED`); the held-out episodes and rollouts (:data:`HELD_OUT_SEED`) are then
            scored once, after the last step (the record's ``held_out``). 0: the curve is the held-out score.
        held_out_episodes: rollouts of that final held-out score (default ``episodes``).
        target_return: the return rollouts are conditioned on (default: the dataset's best).
        metric: the headline metric, one of :data:`METRICS`.
        lora_config: shared by every method; default: the rl plugin's fields with ``lora_alpha = rank``.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA methods (``max_steps``, ``tau``...).

    Returns:
        the :class:`eva_bench.RunRecord`; for EVA, ``extra`` holds ``ranks``, ``eva_batches``, ``eva_seconds``.

    Raises:
        InvalidConfigError: an unknown ``metric`` or ``method``, or too few episodes for the split.
    """
    if metric not in METRICS:
        raise InvalidConfigError(f"metric={metric!r} is not one of {METRICS}; pick 'normalized_return'.")
    module, pretrained = load_pretrained(model) if isinstance(model, str) else (model, {})
    data = task if isinstance(task, TaskData) else load_task_data(task)
    window = context or int(pretrained.get("settings", {}).get("context", 20))
    train_set, dev_set = _split(data, train_limit, dev_limit)
    train_set, validation_set = carve(train_set, validation)
    windows: dict[str, Any] = {"context": window, "batch_size": batch_size, "return_scale": data.task.return_scale}

    def loader() -> Any:  # a fresh pass counter: training reads the same windows whether or not EVA read first
        return trajectory_batches(train_set, batches=max(1, steps), seed=seed, stats=data.stats, **windows)

    goal = data.high if target_return is None else target_return

    def scorer(held: list[Any], env_seed: int, rollouts: int = episodes) -> EvaluateFn:
        """Rollouts from environment seeds ``env_seed + i`` and the action loss on ``held`` episodes."""
        batches = list(trajectory_batches(held, batches=dev_batches, seed=10_000, stats=data.stats, **windows))

        def evaluate(adapted: nn.Module) -> dict[str, float]:
            returns = rollout_returns(
                adapted, data.task.env_id, stats=data.stats, target_return=goal, return_scale=data.task.return_scale,
                context=window, episodes=rollouts, max_episode_steps=data.task.max_episode_steps,
                env_kwargs=data.task.env_kwargs, seed=env_seed,
            )  # fmt: skip
            mean = float(np.mean(returns))
            return {
                "normalized_return": normalized_return(mean, data.low, data.high),
                "return": mean,
                "loss": held_out_loss(adapted, batches),
            }

        return evaluate

    held_out = scorer(dev_set, HELD_OUT_SEED, held_out_episodes if validation and held_out_episodes else episodes)
    extra = {
        "task": data.task.name, "train_episodes": len(train_set), "dev_episodes": len(dev_set),
        "validation_episodes": len(validation_set), "context": window,
        "batch_size": batch_size, "lr": lr, "target_return": goal, "dataset_low": data.low, "dataset_high": data.high,
    }  # fmt: skip
    run = recipe.Task(
        module, loader(), action_loss, scorer(validation_set, VALIDATION_SEED) if validation else held_out, metric,
        DOMAIN, lora_config=lora_config, extra=extra, train_batches=loader(),
        held_out=held_out if validation else None,
    )  # fmt: skip
    return recipe.run(
        run, method, seed=seed, rank=rank, steps=steps, lr=lr, eval_at=(0, steps) if eval_at is None else eval_at,
        eva_overrides=eva_overrides, progress=progress,
    )  # fmt: skip


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

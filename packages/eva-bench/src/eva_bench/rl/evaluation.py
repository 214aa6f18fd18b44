"""Scoring a Decision Transformer: the action loss on held-out windows, and returns in the environment.

Rollouts act autoregressively as in the Decision Transformer paper: the context starts with the target
return ``R*`` (divided by the task's ``return_scale``) and the first state; after each step the reward
is subtracted from the return-to-go, the new state appended, and the last K timesteps (left-padded) are
fed again; the action is read off the last state token.

The normalized return of a mean episode return ``R`` is ``100 * (R - low) / (high - low)`` with
``low``/``high`` the smallest/largest episode return in the task's dataset: 0 is the worst recorded
episode, 100 the best (a D4RL-style score whose reference policies are the dataset's own extremes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from eva_core.errors import InvalidConfigError
from eva_rl import StateStats

__all__ = ["action_loss", "held_out_loss", "normalized_return", "rollout_returns"]


def action_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the predicted actions on the real (unpadded) timesteps.

    Args:
        batch: ``states`` (B, K, d_s), ``actions`` (B, K, d_a), ``returns_to_go`` (B, K, 1),
            ``timesteps`` (B, K), ``attention_mask`` (B, K).

    Returns:
        a scalar: the mean over real timesteps and action dimensions.
    """
    out = model(
        states=batch["states"],
        actions=batch["actions"],
        returns_to_go=batch["returns_to_go"],
        timesteps=batch["timesteps"],
        attention_mask=batch["attention_mask"],
    )
    real = batch["attention_mask"] != 0  # (B, K)
    predicted = out.action_preds[real]  # (N, d_a)
    return torch.mean((predicted - batch["actions"][real]) ** 2)


def held_out_loss(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """The timestep-weighted mean :func:`action_loss` over ``batches`` (no gradients)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = int((batch["attention_mask"] != 0).sum())
            total += float(action_loss(model, batch)) * n
            count += n
    return total / max(count, 1)


def normalized_return(value: float, low: float, high: float) -> float:
    """``100 * (value - low) / (high - low)``.

    Raises:
        InvalidConfigError: ``high <= low`` (a dataset whose episodes all returned the same).
    """
    if not high > low:
        raise InvalidConfigError(
            f"normalized_return needs high > low, got low={low} and high={high}; the dataset's episode returns "
            "must differ (record more episodes or more noise levels)."
        )
    return 100.0 * (value - low) / (high - low)


def rollout_returns(
    model: nn.Module,
    env_id: str,
    *,
    stats: StateStats,
    target_return: float,
    return_scale: float,
    context: int,
    episodes: int = 5,
    max_episode_steps: int = 200,
    seed: int = 10_000,
    env_kwargs: Mapping[str, Any] | None = None,
) -> list[float]:
    """Play ``episodes`` episodes with the Decision Transformer ``model`` acting; their returns.

    Args:
        model: a ``DecisionTransformerModel`` (or a ``PeftModel`` around one); put in eval mode here.
        env_id: the gymnasium id; ``env_kwargs`` go to ``gym.make``.
        stats: the state normalization the model was trained with.
        target_return: ``R*``, the return the model is conditioned on (unscaled).
        return_scale: returns-to-go are divided by it, as in training.
        context: K, the timesteps fed per step.
        seed: episode ``i`` is reset with ``seed + i`` (the default keeps clear of the datasets' seeds).
    """
    env = gym.make(env_id, max_episode_steps=max_episode_steps, **dict(env_kwargs or {}))
    model.eval()
    returns = [
        _episode(model, env, stats, target_return / return_scale, 1.0 / return_scale, context, seed + i)
        for i in range(episodes)
    ]
    env.close()
    return returns


def _episode(
    model: nn.Module, env: gym.Env, stats: StateStats, rtg: float, scale: float, context: int, seed: int
) -> float:
    observation, _ = env.reset(seed=seed)
    d_a = int(np.prod(env.action_space.shape or ()))
    states, actions, goals = [stats.normalize(observation)], [np.zeros(d_a)], [rtg]
    total, t = 0.0, 0
    while True:
        action = _act(model, states[-context:], actions[-context:], goals[-context:], max(0, t + 1 - context))
        observation, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        total += float(reward)
        t += 1
        if terminated or truncated:
            return total
        actions[-1] = action
        states.append(stats.normalize(observation))
        actions.append(np.zeros(d_a))
        goals.append(goals[-1] - float(reward) * scale)


def _act(model: nn.Module, states: list[Any], actions: list[Any], goals: list[float], first: int) -> np.ndarray:
    """The action at the last timestep of one window: states (n, d_s), actions (n, d_a) -> (d_a,)."""
    n = len(states)
    batch = {
        "states": torch.as_tensor(np.stack(states), dtype=torch.float32)[None],  # (1, n, d_s)
        "actions": torch.as_tensor(np.stack(actions), dtype=torch.float32)[None],  # (1, n, d_a)
        "returns_to_go": torch.as_tensor(goals, dtype=torch.float32).reshape(1, n, 1),
        "timesteps": torch.arange(first, first + n).reshape(1, n),
        "attention_mask": torch.ones(1, n, dtype=torch.long),
    }
    with torch.no_grad():
        out = model(**batch)
    return np.clip(out.action_preds[0, -1].numpy().astype(np.float64), -1.0, 1.0)

"""Rollouts of a Decision Transformer in the environment, and the normalized return."""

from __future__ import annotations

import math

import pytest
import torch

import eva_rl
from eva_core import InvalidConfigError
from eva_rl import StateStats, Trajectory


def test_normalized_return_on_hand_values() -> None:
    assert eva_rl.normalized_return(50.0, 0.0, 200.0) == 25.0
    assert eva_rl.normalized_return(-10.0, -10.0, 30.0) == 0.0
    assert eva_rl.normalized_return(30.0, -10.0, 30.0) == 100.0
    assert eva_rl.normalized_return(40.0, -10.0, 30.0) == 125.0
    with pytest.raises(InvalidConfigError, match="high > low"):
        eva_rl.normalized_return(1.0, 2.0, 2.0)


def test_rollouts_give_finite_returns(tiny_dt: torch.nn.Module, cheetah_episodes: list[Trajectory]) -> None:
    returns = eva_rl.rollout_returns(
        tiny_dt, "HalfCheetah-v5", stats=StateStats.of(cheetah_episodes), target_return=50.0, return_scale=10.0,
        context=5, episodes=2, max_episode_steps=12,
    )  # fmt: skip
    assert len(returns) == 2 and all(math.isfinite(r) for r in returns)
    assert returns[0] != returns[1]  # two reset seeds

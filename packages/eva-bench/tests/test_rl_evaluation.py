"""Scoring a Decision Transformer: rollouts in the environment, the normalized return, and the action loss
that EVA-initialized adapters lower in training."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import eva_rl
from eva_bench import train
from eva_bench.rl.datasets import make_dataset
from eva_bench.rl.evaluation import action_loss, held_out_loss, normalized_return, rollout_returns
from eva_bench.rl.models import decision_transformer
from eva_bench.rl.policies import LinearPolicy
from eva_core.errors import InvalidConfigError, NotConvergedWarning
from eva_rl import StateStats, Trajectory


@pytest.fixture(scope="module")
def cheetah_episodes(tmp_path_factory: pytest.TempPathFactory) -> list[Trajectory]:
    """Six 30-step HalfCheetah-v5 episodes of a random linear policy at three noise levels, via minari."""
    rng = np.random.default_rng(0)
    policy = LinearPolicy(rng.normal(0, 0.3, (6, 17)), np.zeros(17), np.ones(17))
    dataset = make_dataset(
        "HalfCheetah-v5", policy, 6, "test/cheetah-v0", root=tmp_path_factory.mktemp("minari"),
        max_episode_steps=30, noise=(0.0, 0.3, 1.0),
    )  # fmt: skip
    return eva_rl.trajectories(dataset)


@pytest.fixture
def tiny_dt() -> torch.nn.Module:
    torch.manual_seed(0)
    return decision_transformer(17, 6, hidden_size=32, layers=2, heads=2, max_ep_len=64).eval()


def test_normalized_return_on_hand_values() -> None:
    assert normalized_return(50.0, 0.0, 200.0) == 25.0
    assert normalized_return(-10.0, -10.0, 30.0) == 0.0
    assert normalized_return(30.0, -10.0, 30.0) == 100.0
    assert normalized_return(40.0, -10.0, 30.0) == 125.0
    with pytest.raises(InvalidConfigError, match="high > low"):
        normalized_return(1.0, 2.0, 2.0)


def test_rollouts_give_finite_returns(tiny_dt: torch.nn.Module, cheetah_episodes: list[Trajectory]) -> None:
    returns = rollout_returns(
        tiny_dt, "HalfCheetah-v5", stats=StateStats.of(cheetah_episodes), target_return=50.0, return_scale=10.0,
        context=5, episodes=2, max_episode_steps=12,
    )  # fmt: skip
    assert len(returns) == 2 and all(math.isfinite(r) for r in returns)
    assert returns[0] != returns[1]  # two reset seeds


def test_eva_init_then_training_lowers_the_action_loss(
    tiny_dt: torch.nn.Module, cheetah_episodes: list[Trajectory]
) -> None:
    batches: list[Any] = list(
        eva_rl.trajectory_batches(cheetah_episodes, context=10, batch_size=8, batches=3, seed=0, return_scale=10.0)
    )
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    with torch.no_grad():
        by_hand = sum(float(action_loss(tiny_dt, b)) * int(b["attention_mask"].sum()) for b in batches) / real
    assert held_out_loss(tiny_dt, batches) == pytest.approx(by_hand)  # weighted by real timesteps
    with pytest.warns(NotConvergedWarning):
        model = eva_rl.init(tiny_dt, batches, rank=2, tau=0.999, max_steps=2, progress=False)
    curve = train(
        model, batches, action_loss, lambda m: {"loss": held_out_loss(m, batches)}, steps=12, eval_at=(0, 12), lr=3e-3
    )
    assert curve[-1].metrics["loss"] < curve[0].metrics["loss"]

"""The rl harness's data: minari datasets recorded from a real environment, and the ARS behaviour policy."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from eva_bench.rl.datasets import MINARI_ENV, dataset_exists, load_dataset, make_dataset
from eva_bench.rl.policies import ARSSettings, LinearPolicy, episode_return, train_ars
from eva_rl import trajectories


def _random_policy(seed: int = 0) -> LinearPolicy:
    """A fixed random linear policy for HalfCheetah and Walker2d (17 observations, 6 actions)."""
    rng = np.random.default_rng(seed)
    return LinearPolicy(rng.normal(0, 0.3, (6, 17)), np.zeros(17), np.ones(17))


def test_dataset_round_trips_through_minari(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MINARI_ENV, raising=False)
    policy = _random_policy(1)
    make_dataset("Walker2d-v5", policy, 3, "test/walker-v0", root=tmp_path, max_episode_steps=25)
    assert MINARI_ENV not in os.environ  # set only while minari works
    assert dataset_exists("test/walker-v0", tmp_path) and (tmp_path / "test").is_dir()
    loaded = load_dataset("test/walker-v0", tmp_path)
    assert loaded.total_episodes == 3
    episodes = trajectories(loaded)
    env = gym.make("Walker2d-v5", max_episode_steps=25)
    for i, episode in enumerate(episodes):
        expected, seen = episode_return(env, policy, seed=i)  # no noise: the same episode again
        assert len(episode) == len(seen) <= 25
        np.testing.assert_allclose(episode.episode_return, expected, rtol=1e-6)
        np.testing.assert_allclose(episode.states, np.asarray(seen), rtol=1e-6)
    assert loaded.total_steps == sum(len(e) for e in episodes)


def test_noise_levels_spread_the_returns(tmp_path: Path) -> None:
    dataset = make_dataset(
        "HalfCheetah-v5", _random_policy(), 6, "test/cheetah-v0", root=tmp_path, max_episode_steps=30,
        noise=(0.0, 0.3, 1.0),
    )  # fmt: skip
    episodes = trajectories(dataset)
    assert len(episodes) == 6 and all(len(e) == 30 for e in episodes)
    returns = [e.episode_return for e in episodes]
    assert len(set(np.round(returns, 6))) == 6


def test_ars_improves_a_linear_policy() -> None:
    settings = ARSSettings(iterations=4, directions=4, top=2, max_episode_steps=20, step_size=0.05)
    policy, curve = train_ars("HalfCheetah-v5", settings)
    assert policy.weight.shape == (6, 17) and len(curve) == 4 and all(np.isfinite(curve))
    assert np.all(np.abs(policy(np.ones(17))) <= 1.0)

"""Shared fixtures: a tiny minari dataset recorded from a real HalfCheetah-v5 and a tiny Decision Transformer."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from rl_policies import ACT_DIM, STATE_DIM, random_policy

from eva_core.plugins.manager import DISABLE_ENV
from eva_rl import Trajectory, decision_transformer, make_dataset, trajectories, trajectory_batches
from eva_rl.datasets import MINARI_ENV


@pytest.fixture(autouse=True)
def _only_rl_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Skip every other installed eva plugin and keep minari away from the user's folder."""
    others = sorted({point.name for point in entry_points(group="eva")} - {"rl"})
    if others:
        monkeypatch.setenv(DISABLE_ENV, ",".join(others))
    monkeypatch.delenv(MINARI_ENV, raising=False)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def minari_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minari")


@pytest.fixture(scope="session")
def cheetah_episodes(minari_folder: Path) -> list[Trajectory]:
    """Six 30-step HalfCheetah-v5 episodes of a random linear policy at three noise levels, via minari."""
    dataset = make_dataset(
        "HalfCheetah-v5", random_policy(), 6, "test/cheetah-v0", root=minari_folder, max_episode_steps=30,
        noise=(0.0, 0.3, 1.0),
    )  # fmt: skip
    return trajectories(dataset)


@pytest.fixture
def tiny_dt() -> torch.nn.Module:
    torch.manual_seed(0)
    return decision_transformer(STATE_DIM, ACT_DIM, hidden_size=32, layers=2, heads=2, max_ep_len=64).eval()


@pytest.fixture
def dt_batches(cheetah_episodes: list[Trajectory]) -> list[dict[str, torch.Tensor]]:
    """Three batches of 8 windows of K=10 steps (left-padded at episode starts)."""
    return list(trajectory_batches(cheetah_episodes, context=10, batch_size=8, batches=3, seed=0, return_scale=10.0))

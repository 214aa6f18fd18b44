"""Shared fixtures: a tiny minari dataset recorded from a real HalfCheetah-v5 and a tiny Decision Transformer."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from rl_data import random_policy, record_minari, tiny_decision_transformer

from eva_core.plugins.manager import DISABLE_ENV
from eva_rl import Trajectory, trajectories, trajectory_batches


@pytest.fixture(autouse=True)
def _only_rl_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Skip every other installed eva plugin and keep minari away from the user's folder."""
    others = sorted({point.name for point in entry_points(group="eva")} - {"rl"})
    if others:
        monkeypatch.setenv(DISABLE_ENV, ",".join(others))
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def minari_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minari")


@pytest.fixture(scope="session")
def cheetah_dataset(minari_folder: Path) -> Path:
    """Six 30-step HalfCheetah-v5 episodes of a random linear policy at three noise levels, as a minari
    dataset; its folder."""
    return record_minari(
        "HalfCheetah-v5", random_policy(), 6, "test/cheetah-v0", root=minari_folder, max_episode_steps=30,
        noise=(0.0, 0.3, 1.0),
    )  # fmt: skip


@pytest.fixture(scope="session")
def cheetah_episodes(cheetah_dataset: Path) -> list[Trajectory]:
    import minari

    return trajectories(minari.MinariDataset(str(cheetah_dataset / "data")))


@pytest.fixture
def tiny_dt() -> torch.nn.Module:
    return tiny_decision_transformer()


@pytest.fixture
def dt_batches(cheetah_episodes: list[Trajectory]) -> list[dict[str, torch.Tensor]]:
    """Three batches of 8 windows of K=10 steps (left-padded at episode starts)."""
    return list(trajectory_batches(cheetah_episodes, context=10, batch_size=8, batches=3, seed=0, return_scale=10.0))

"""Episodes read from a minari dataset recorded in a real environment, and the Decision Transformer batches
cut from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eva_rl import StateStats, Trajectory, TrajectoryError, trajectory_batches
from eva_rl.trajectories import returns_to_go


def test_minari_episodes_become_trajectories(cheetah_dataset: Path, cheetah_episodes: list[Trajectory]) -> None:
    import minari

    dataset = minari.MinariDataset(str(cheetah_dataset / "data"))
    assert len(cheetah_episodes) == 6 and all(len(e) == 30 for e in cheetah_episodes)
    for episode, raw in zip(cheetah_episodes, dataset.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(episode.states, raw.observations[:-1])  # minari keeps L + 1 observations
        np.testing.assert_array_equal(episode.actions, raw.actions)
        assert episode.episode_return == pytest.approx(float(np.sum(raw.rewards)))
    direct = next(iter(trajectory_batches(dataset, context=4, batch_size=3, batches=1)))
    listed = next(iter(trajectory_batches(cheetah_episodes, context=4, batch_size=3, batches=1)))
    for key, value in direct.items():
        torch.testing.assert_close(value, listed[key], rtol=0, atol=0)


def test_returns_to_go_on_a_hand_episode() -> None:
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0])), [6.0, 5.0, 3.0])
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 4.0]), discount=0.5), [3.0, 4.0, 4.0])


def _hand_episode() -> Trajectory:
    states = np.arange(12, dtype=np.float64).reshape(4, 3)  # (L=4, d_s=3)
    actions = np.full((4, 2), 0.5)
    return Trajectory(states, actions, np.array([1.0, 2.0, 3.0, 4.0]))


@pytest.mark.parametrize("padding", ["left", "right"])
def test_window_padding_and_scaling(padding: str) -> None:
    episode = _hand_episode()
    stats = StateStats(mean=np.zeros(3), std=np.full(3, 2.0))
    loader = trajectory_batches([episode], context=3, batch_size=2, batches=1, return_scale=10.0, stats=stats,
                                padding=padding)  # fmt: skip
    batch = loader.window_batch([(0, 0), (0, 2)])
    assert batch["states"].shape == (2, 3, 3) and batch["actions"].shape == (2, 3, 2)
    assert batch["returns_to_go"].shape == (2, 3, 1) and batch["timesteps"].dtype == torch.long
    torch.testing.assert_close(batch["returns_to_go"][0, :, 0], torch.tensor([1.0, 0.9, 0.7]))
    assert batch["attention_mask"][0].tolist() == [1, 1, 1]
    # the window at t=2 holds timesteps 2, 3 and one padded step
    real = [0, 1, 1] if padding == "left" else [1, 1, 0]
    assert batch["attention_mask"][1].tolist() == real
    keep = batch["attention_mask"][1].bool()
    assert batch["timesteps"][1][keep].tolist() == [2, 3]
    torch.testing.assert_close(batch["returns_to_go"][1, keep, 0], torch.tensor([0.7, 0.4]))
    torch.testing.assert_close(batch["states"][1, keep], torch.tensor(episode.states[2:] / 2.0, dtype=torch.float32))
    assert float(batch["states"][1, ~keep].abs().sum()) == 0.0


def test_loader_shapes_and_reproducible_epochs(cheetah_episodes: list[Trajectory]) -> None:
    loader = trajectory_batches(cheetah_episodes, context=7, batch_size=5, batches=2, seed=3)
    first, second = list(loader), list(loader)
    assert len(first) == 2
    batch = first[0]
    assert batch["states"].shape == (5, 7, 17) and batch["actions"].shape == (5, 7, 6)
    assert batch["attention_mask"].shape == batch["timesteps"].shape == (5, 7)
    assert not torch.equal(first[0]["states"], second[0]["states"])  # a new epoch draws new windows
    again = list(trajectory_batches(cheetah_episodes, context=7, batch_size=5, batches=2, seed=3))
    assert torch.equal(again[0]["states"], first[0]["states"])
    stats = StateStats.of(cheetah_episodes)
    all_states = np.concatenate([e.states for e in cheetah_episodes])
    np.testing.assert_allclose(stats.normalize(all_states).mean(0), 0.0, atol=1e-9)


def test_loader_rejects_bad_arguments(cheetah_episodes: list[Trajectory]) -> None:
    with pytest.raises(TrajectoryError, match="padding"):
        trajectory_batches(cheetah_episodes, padding="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        trajectory_batches(cheetah_episodes, context=0)
    with pytest.raises(TrajectoryError, match="states"):
        Trajectory(np.zeros((3, 2)), np.zeros((2, 1)), np.zeros(2))

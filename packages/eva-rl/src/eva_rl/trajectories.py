"""Episodes as arrays (a helper of the batches role: :mod:`eva_rl.batches` cuts its windows from them).

An episode of length L is ``states`` (L, d_s) (the observation before each action), ``actions`` (L, d_a)
and ``rewards`` (L,). :func:`trajectories` reads them from a minari dataset or any iterable of episodes
shaped like minari's, without importing minari; :class:`StateStats` normalizes states.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TrajectoryError

__all__ = ["StateStats", "Trajectory", "returns_to_go", "trajectories"]


@dataclass(frozen=True)
class Trajectory:
    """One episode: ``states`` (L, d_s) (the observation before each action), ``actions`` (L, d_a),
    ``rewards`` (L,).

    Raises:
        TrajectoryError: the three lengths differ, or L is 0.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray

    def __post_init__(self) -> None:
        length = len(self.rewards)
        if length < 1 or len(self.states) != length or len(self.actions) != length:
            raise TrajectoryError(
                f"an episode needs L >= 1 states, actions and rewards alike; got {len(self.states)} states, "
                f"{len(self.actions)} actions and {length} rewards. Drop the final observation (minari stores L + 1)."
            )

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        """The undiscounted sum of rewards."""
        return float(np.sum(self.rewards))


@dataclass(frozen=True)
class StateStats:
    """Per-feature mean and std (d_s,) of the states of a dataset; ``normalize`` maps (..., d_s) arrays."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, episodes: Sequence[Trajectory], eps: float = 1e-6) -> StateStats:
        """Mean and std over every state of ``episodes`` (std floored at ``eps``)."""
        states = np.concatenate([e.states for e in episodes], axis=0)  # (N, d_s)
        return cls(mean=states.mean(axis=0), std=np.maximum(states.std(axis=0), eps))

    def normalize(self, states: np.ndarray) -> np.ndarray:
        return (states - self.mean) / self.std

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateStats:
        return cls(mean=np.asarray(data["mean"], dtype=np.float64), std=np.asarray(data["std"], dtype=np.float64))


def trajectories(dataset: Any) -> list[Trajectory]:
    """The episodes of a minari dataset (or any iterable of episodes with ``observations`` (L + 1, d_s),
    ``actions`` (L, d_a) and ``rewards`` (L,)) as :class:`Trajectory`, in dataset order."""
    episodes: Iterable[Any] = dataset.iterate_episodes() if hasattr(dataset, "iterate_episodes") else dataset
    out = []
    for episode in episodes:
        rewards = np.asarray(episode.rewards, dtype=np.float64)
        observations = np.asarray(episode.observations, dtype=np.float64)
        out.append(Trajectory(observations[: len(rewards)], np.asarray(episode.actions, dtype=np.float64), rewards))
    return out


def returns_to_go(rewards: np.ndarray, discount: float = 1.0) -> np.ndarray:
    """``rtg[t] = sum_{u >= t} discount**(u - t) * rewards[u]``: rewards (L,) -> (L,)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + discount * running
        out[t] = running
    return out

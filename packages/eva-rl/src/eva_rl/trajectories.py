"""Episodes as arrays, and the Decision Transformer batches cut from them.

A batch holds ``B`` windows of ``K`` consecutive timesteps (the context), each drawn from an episode
with probability proportional to its length (so every timestep is about equally likely, as in the
Decision Transformer paper). A window shorter than ``K`` (an episode's first steps, or a short
episode) is padded, on the left by default, and the padding is masked out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .errors import TrajectoryError

__all__ = ["StateStats", "Trajectory", "TrajectoryBatches", "returns_to_go", "trajectories", "trajectory_batches"]

Padding = Literal["left", "right"]


@dataclass(frozen=True)
class Trajectory:
    """One episode: ``states`` (L, d_s) (the observation before each action), ``actions`` (L, d_a),
    ``rewards`` (L,)."""

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


class TrajectoryBatches:
    """A re-iterable of Decision Transformer batches (see :func:`trajectory_batches`).

    Each pass yields ``batches`` batches; pass ``e`` draws its windows from ``seed + e``, so a
    ``DataLoader``-like epoch loop sees fresh windows every epoch and a rerun sees the same ones.
    """

    def __init__(
        self,
        episodes: Sequence[Trajectory],
        *,
        context: int,
        batch_size: int,
        batches: int,
        seed: int,
        return_scale: float,
        stats: StateStats,
        padding: Padding,
    ) -> None:
        self.episodes = list(episodes)
        self.context, self.batch_size, self.batches = context, batch_size, batches
        self.seed, self.return_scale, self.stats, self.padding = seed, return_scale, stats, padding
        self._rtg = [returns_to_go(e.rewards) for e in self.episodes]
        lengths = np.array([len(e) for e in self.episodes], dtype=np.float64)
        self._weights = lengths / lengths.sum()
        self._epoch = 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed + self._epoch)
        self._epoch += 1
        for _ in range(self.batches):
            picks = rng.choice(len(self.episodes), size=self.batch_size, p=self._weights)
            starts = [int(rng.integers(0, len(self.episodes[i]))) for i in picks]
            yield self.window_batch(list(zip(picks.tolist(), starts, strict=True)))

    def window_batch(self, windows: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The batch of the windows ``(episode index, start timestep)``: each covers timesteps
        ``start .. start + K - 1`` (cut at the episode end and padded to K).

        Returns:
            ``states`` (B, K, d_s) normalized, ``actions`` (B, K, d_a), ``rewards`` (B, K, 1),
            ``returns_to_go`` (B, K, 1) divided by ``return_scale``, ``timesteps`` (B, K) long,
            ``attention_mask`` (B, K) long (1 = real timestep).
        """
        k = self.context
        rows: dict[str, list[np.ndarray]] = {key: [] for key in ("s", "a", "r", "g", "t", "m")}
        for index, start in windows:
            episode = self.episodes[index]
            stop = min(start + k, len(episode))
            n, pad = stop - start, k - (stop - start)
            parts = {
                "s": self.stats.normalize(episode.states[start:stop]),  # (n, d_s)
                "a": episode.actions[start:stop],  # (n, d_a)
                "r": episode.rewards[start:stop, None],  # (n, 1)
                "g": self._rtg[index][start:stop, None] / self.return_scale,  # (n, 1)
                "t": np.arange(start, stop),  # (n,)
                "m": np.ones(n),  # (n,)
            }
            for key, value in parts.items():
                filler = np.zeros((pad, *value.shape[1:]))
                rows[key].append(np.concatenate([filler, value] if self.padding == "left" else [value, filler]))
        stacked = {key: np.stack(value) for key, value in rows.items()}
        return {
            "states": torch.as_tensor(stacked["s"], dtype=torch.float32),
            "actions": torch.as_tensor(stacked["a"], dtype=torch.float32),
            "rewards": torch.as_tensor(stacked["r"], dtype=torch.float32),
            "returns_to_go": torch.as_tensor(stacked["g"], dtype=torch.float32),
            "timesteps": torch.as_tensor(stacked["t"], dtype=torch.long),
            "attention_mask": torch.as_tensor(stacked["m"], dtype=torch.long),
        }


def trajectory_batches(
    dataset: Any,
    *,
    context: int = 20,
    batch_size: int = 64,
    batches: int = 100,
    seed: int = 0,
    return_scale: float = 100.0,
    stats: StateStats | None = None,
    padding: Padding = "left",
) -> TrajectoryBatches:
    """Decision Transformer batches of random K-step windows of ``dataset``'s episodes.

    Args:
        dataset: a minari dataset, or a sequence of :class:`Trajectory` / minari episodes.
        context: K, the timesteps per window.
        batch_size: B, windows per batch. ``batches``: batches per pass over the iterable.
        seed: seeds the window draws (pass ``e`` uses ``seed + e``).
        return_scale: returns-to-go are divided by it (keeps the return token near unit scale).
        stats: the state normalization; default :meth:`StateStats.of` the episodes themselves.
        padding: ``"left"`` (as the Decision Transformer is evaluated) or ``"right"``.

    Raises:
        TrajectoryError: no episode, a bad ``padding``, or a non-positive size.
    """
    episodes = list(dataset) if _is_trajectory_list(dataset) else trajectories(dataset)
    if not episodes:
        raise TrajectoryError("trajectory_batches(dataset=...) has no episode; pass a dataset with episodes.")
    if padding not in ("left", "right"):
        raise TrajectoryError(f"padding={padding!r} is invalid; pick 'left' or 'right'.")
    for name, value in (("context", context), ("batch_size", batch_size), ("batches", batches)):
        if value < 1:
            raise TrajectoryError(f"{name}={value} must be >= 1.")
    if return_scale <= 0:
        raise TrajectoryError(f"return_scale={return_scale} must be > 0 (returns-to-go are divided by it).")
    return TrajectoryBatches(
        episodes,
        context=context,
        batch_size=batch_size,
        batches=batches,
        seed=seed,
        return_scale=return_scale,
        stats=stats or StateStats.of(episodes),
        padding=padding,
    )


def _is_trajectory_list(dataset: Any) -> bool:
    return isinstance(dataset, Sequence) and all(isinstance(item, Trajectory) for item in dataset)

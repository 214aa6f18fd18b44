"""How a batch of trajectory windows becomes Decision Transformer inputs and rows, and how such batches are
cut from episodes.

A batch is a dict of ``states`` (B, T, d_s), ``actions`` (B, T, d_a), ``returns_to_go`` (B, T, 1),
``timesteps`` (B, T), optionally ``attention_mask`` (B, T) (1 = a real timestep, 0 = padding) and
``rewards`` (B, T, 1). ``DecisionTransformerModel.forward`` turns each timestep into three tokens, stacked
as ``torch.stack((returns, states, actions), dim=1).permute(0, 2, 1, 3).reshape(B, 3T, H)``: token ``3t + 0``
is the return-to-go of timestep t, ``3t + 1`` its state, ``3t + 2`` its action, and the (B, T) mask is
stacked the same way. :func:`token_mask` reproduces that order, so padded timesteps give no rows.

:func:`trajectory_batches` cuts such batches from episodes: ``B`` windows of ``K`` consecutive timesteps
(the context), each drawn from an episode with probability proportional to its length (so every timestep
is about equally likely, as in the Decision Transformer paper). A window shorter than ``K`` (an episode's
first steps, or a short episode) is padded, on the left by default, and the padding is masked out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from eva_core import PreparedBatch

from .errors import TrajectoryError
from .trajectories import StateStats, Trajectory, returns_to_go, trajectories

__all__ = [
    "MODALITIES",
    "MODEL_INPUTS",
    "TOKENS_PER_STEP",
    "TrajectoryBatches",
    "prepare_batch",
    "token_mask",
    "trajectory_batches",
]

MODALITIES: tuple[str, ...] = ("return", "state", "action")
"""The three tokens of one timestep, in sequence order."""

TOKENS_PER_STEP = len(MODALITIES)

MODEL_INPUTS: tuple[str, ...] = ("states", "actions", "rewards", "returns_to_go", "timesteps", "attention_mask")
"""Batch keys passed to ``DecisionTransformerModel.forward`` (``rewards`` is optional; others are dropped)."""

_REQUIRED = ("states", "actions", "returns_to_go", "timesteps")

Padding = Literal["left", "right"]


def token_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The GPT-2 token mask of a (B, T) timestep mask, in the model's interleaved order.

    Args:
        attention_mask: (B, T), nonzero where the timestep is real (not padding).

    Returns:
        (B, 3T) bool: entry ``3t + k`` is the mask of timestep t for k in (return, state, action).

    Raises:
        TrajectoryError: ``attention_mask`` is not 2-d.
    """
    if attention_mask.dim() != 2:
        raise TrajectoryError(
            f"attention_mask must be (B, T) (one entry per timestep), got shape {tuple(attention_mask.shape)}; "
            "pass the per-timestep mask the Decision Transformer takes."
        )
    return (attention_mask != 0).repeat_interleave(TOKENS_PER_STEP, dim=1)  # (B, 3T)


def prepare_batch(batch: Any) -> PreparedBatch | None:
    """A trajectory dict -> model keyword arguments and the (B, 3T) token mask; None for anything else.

    All timesteps count when the batch has no ``attention_mask``.
    """
    if not isinstance(batch, Mapping) or not all(key in batch for key in _REQUIRED):
        return None
    kwargs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    attention = batch.get("attention_mask")
    mask = token_mask(attention) if isinstance(attention, torch.Tensor) else None  # (B, 3T)
    return PreparedBatch(kwargs=kwargs, row_mask=mask)


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
        stacked = {key: np.stack(value) for key, value in rows.items()}  # (B, K, ...)
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

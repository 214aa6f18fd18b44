"""Behaviour policies trained here: a linear policy fitted by Augmented Random Search (ARS).

ARS (Mania et al., 2018, the "V2-t" variant) perturbs the weight matrix ``M`` (d_a, d_s) of
``a = clip(M (s - mu) / sigma, -1, 1)`` along ``n`` random directions ``delta`` (both signs), keeps the
``top`` directions by ``max(r+, r-)``, and steps ``M += lr / (top * sigma_r) * sum (r+ - r-) delta``
(``sigma_r`` the std of the kept returns). ``mu``/``sigma`` are running state statistics. It needs no
gradients and a few thousand environment steps per iteration, so a usable HalfCheetah or Walker2d
policy takes a minute or two on one CPU thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

__all__ = ["ARSSettings", "LinearPolicy", "NoisyPolicy", "Policy", "episode_return", "train_ars"]

_log = logging.getLogger(__name__)

Policy = Callable[[np.ndarray], np.ndarray]
"""``observation (d_s,) -> action (d_a,)``."""


@dataclass(frozen=True)
class LinearPolicy:
    """``a = clip(weight @ ((s - mean) / std), -1, 1)``: weight (d_a, d_s), mean and std (d_s,)."""

    weight: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        return np.clip(self.weight @ ((observation - self.mean) / self.std), -1.0, 1.0)

    def to_json(self) -> dict[str, list[Any]]:
        return {"weight": self.weight.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinearPolicy:
        return cls(*(np.asarray(data[key], dtype=np.float64) for key in ("weight", "mean", "std")))


@dataclass
class NoisyPolicy:
    """``policy`` plus Gaussian action noise of std ``noise``, clipped to [-1, 1] (a worse behaviour
    policy for a spread of returns); ``rng`` draws the noise."""

    policy: Policy
    noise: float
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        action = self.policy(observation)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0)


@dataclass(frozen=True)
class ARSSettings:
    """Augmented Random Search: ``iterations`` updates of ``directions`` perturbations of size
    ``noise``, the best ``top`` kept, step ``step_size``; episodes capped at ``max_episode_steps``."""

    iterations: int = 60
    directions: int = 8
    top: int = 4
    step_size: float = 0.02
    noise: float = 0.03
    max_episode_steps: int = 200
    seed: int = 0


def episode_return(env: gym.Env, policy: Policy, seed: int | None = None) -> tuple[float, list[np.ndarray]]:
    """Run one episode of ``policy`` in ``env``; the return and the observations seen (before each step)."""
    observation, _ = env.reset(seed=seed)
    total, seen = 0.0, []
    while True:
        seen.append(observation)
        observation, reward, terminated, truncated, _ = env.step(policy(observation).astype(np.float32))
        total += float(reward)
        if terminated or truncated:
            return total, seen


def train_ars(
    env_id: str,
    settings: ARSSettings = ARSSettings(),
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> tuple[LinearPolicy, list[float]]:
    """Train a :class:`LinearPolicy` on ``env_id`` with ARS.

    Returns:
        the policy and, per iteration, the mean return of its perturbed rollouts.
    """
    env = gym.make(env_id, max_episode_steps=settings.max_episode_steps, **dict(env_kwargs or {}))
    rng = np.random.default_rng(settings.seed)
    d_s = int(np.prod(env.observation_space.shape or ()))
    d_a = int(np.prod(env.action_space.shape or ()))
    weight = np.zeros((d_a, d_s))
    count, total, squares = 1e-4, np.zeros(d_s), np.zeros(d_s)
    mean, std = np.zeros(d_s), np.ones(d_s)
    history: list[float] = []
    episode = 0
    for _ in tqdm(range(settings.iterations), desc=f"ARS {env_id}", disable=not progress, leave=False):
        deltas = rng.normal(size=(settings.directions, d_a, d_s))  # (n, d_a, d_s)
        returns = np.zeros((settings.directions, 2))
        for i, delta in enumerate(deltas):
            for j, sign in enumerate((1.0, -1.0)):
                policy = LinearPolicy(weight + sign * settings.noise * delta, mean, std)
                returns[i, j], seen = episode_return(env, policy, seed=settings.seed * 100_003 + episode)
                episode += 1
                states = np.asarray(seen)  # (L, d_s)
                count, total, squares = count + len(states), total + states.sum(0), squares + (states**2).sum(0)
        best = np.argsort(-returns.max(axis=1))[: settings.top]
        sigma = returns[best].std() or 1.0
        step = np.einsum("n,nij->ij", returns[best, 0] - returns[best, 1], deltas[best])
        weight = weight + settings.step_size / (settings.top * sigma) * step
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 1e-4))
        history.append(float(returns.mean()))
        _log.debug("ARS %s iteration %d: mean return %.1f", env_id, len(history), history[-1])
    env.close()
    return LinearPolicy(weight, mean, std), history

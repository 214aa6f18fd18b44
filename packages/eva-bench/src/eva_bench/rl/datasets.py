"""Minari datasets generated here: episodes of a behaviour policy in a gymnasium environment.

Minari keeps datasets under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``). Everything here
takes an explicit ``root`` and sets that variable only while it works (:func:`minari_root`), so a
dataset built for eva lives under :func:`eva_core.cache_dir` (or a test's tmp folder), never in the
user's minari folder.

Episodes are stepped here and handed to minari as its own ``EpisodeBuffer``s
(``create_dataset_from_buffers``), not through minari's ``DataCollector`` wrapper: the collector leaves
its temporary folders to the garbage collector, whose ``ResourceWarning`` the tests turn into errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer

from .policies import NoisyPolicy, Policy

__all__ = ["MINARI_ENV", "dataset_exists", "load_dataset", "make_dataset", "minari_root"]

MINARI_ENV = "MINARI_DATASETS_PATH"


@contextlib.contextmanager
def minari_root(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Point minari at ``root`` (created if missing) for the duration of the block, then restore."""
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(MINARI_ENV)
    os.environ[MINARI_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MINARI_ENV, None)
        else:
            os.environ[MINARI_ENV] = previous


def dataset_exists(dataset_id: str, root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds the minari dataset ``dataset_id``."""
    with minari_root(root):
        return dataset_id in minari.list_local_datasets()


def load_dataset(dataset_id: str, root: str | os.PathLike[str]) -> minari.MinariDataset:
    """The minari dataset ``dataset_id`` stored under ``root`` (never downloaded)."""
    with minari_root(root):
        return minari.load_dataset(dataset_id, download=False)


def make_dataset(
    env_id: str,
    policy: Policy,
    episodes: int,
    dataset_id: str,
    *,
    root: str | os.PathLike[str],
    max_episode_steps: int,
    seed: int = 0,
    noise: Sequence[float] = (0.0,),
    env_kwargs: Mapping[str, Any] | None = None,
    algorithm_name: str = "eva-rl behaviour policy",
    description: str | None = None,
    overwrite: bool = False,
) -> minari.MinariDataset:
    """Record ``episodes`` episodes of ``policy`` in ``env_id`` as the minari dataset ``dataset_id``.

    Episode ``i`` is reset with seed ``seed + i`` and acts with Gaussian action noise of std
    ``noise[i % len(noise)]`` (clipped to [-1, 1]), so several noise levels give a spread of returns.

    Args:
        env_id: a gymnasium id (``HalfCheetah-v5``); ``env_kwargs`` go to ``gym.make`` (changed dynamics).
        policy: ``observation -> action``.
        dataset_id: minari's ``namespace/name-vN``.
        root: the folder minari stores the dataset in.
        max_episode_steps: the time limit of every episode.
        overwrite: replace an existing dataset of that id (otherwise minari refuses).

    Returns:
        the dataset, loaded back from disk.
    """
    kwargs = dict(env_kwargs or {})
    rng = np.random.default_rng(seed)
    levels = list(noise) or [0.0]
    env = gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    buffers = []
    for i in range(episodes):
        acting = NoisyPolicy(policy, levels[i % len(levels)], rng)
        buffers.append(_record_episode(env, acting, episode_id=i, seed=seed + i))
    with minari_root(root):
        if overwrite and dataset_id in minari.list_local_datasets():
            minari.delete_dataset(dataset_id)
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env.spec,
            eval_env=env.spec,
            algorithm_name=algorithm_name,
            author="eva-rl",
            author_email="eva-rl@localhost",
            code_permalink="packages/eva-bench/src/eva_bench/rl/datasets.py",
            description=description or f"{episodes} episodes of {algorithm_name} on {env_id}, action noise {levels}",
            data_format="hdf5",
        )
        env.close()
        return minari.load_dataset(dataset_id, download=False)


def _record_episode(env: gym.Env, policy: Policy, *, episode_id: int, seed: int) -> EpisodeBuffer:
    """One episode as minari stores it: observations (L + 1, d_s), actions (L, d_a), rewards (L,)..."""
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    while True:
        action = policy(observation).astype(np.float32)
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        if terminated or truncated:
            break
    return EpisodeBuffer(
        id=episode_id,
        seed=seed,
        observations=np.stack(observations),
        actions=np.stack(actions),
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        infos={},
    )

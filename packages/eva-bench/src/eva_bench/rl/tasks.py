"""The offline RL tasks: an environment, a behaviour policy's dataset and how it is scored.

- ``halfcheetah`` (the source task): ``HalfCheetah-v5``, episodes cut at 200 steps.
- ``walker2d`` (the target task): ``Walker2d-v5``, episodes cut at 200 steps (and ended early when the
  walker falls). Its observation (17) and action (6) sizes equal HalfCheetah's, so every layer of a
  HalfCheetah Decision Transformer transfers; the body, the contacts and the termination rule
  differ: the changed dynamics the adapters must absorb. ``env_kwargs`` can change them further (any
  ``gym.make`` keyword of the environment, e.g. ``frame_skip`` or ``healthy_z_range``).

Each task's dataset is recorded from a linear policy trained here by ARS, acting with Gaussian action
noise cycling through ``noise`` per episode, which spreads the episode returns from poor to good. The
datasets live where eva-rl's ``eva-lora fit`` reads them (:data:`eva_rl.cli.DATASETS_CACHE`): the minari
dataset under ``<cache>/rl-datasets`` and ``<task>.json`` with the settings it was built with (the
``dataset_id`` and ``return_scale`` eva-rl reads), the policy and the returns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_core.errors import InvalidConfigError
from eva_core.paths import cache_dir
from eva_rl import MissingPretrainingError, StateStats, Trajectory, trajectories
from eva_rl.cli import BUILD_COMMAND, DATASETS_CACHE, task_record_path

from .policies import ARSSettings

__all__ = ["DATASETS_CACHE", "TASKS", "Task", "TaskData", "dataset_record_path", "get_task", "load_task_data"]


@dataclass(frozen=True)
class Task:
    """One environment and the dataset recorded in it.

    Attributes:
        name: the alias (``walker2d``). ``env_id``: the gymnasium id; ``env_kwargs``: ``gym.make`` keywords.
        dataset_id: the minari id. ``episodes``: episodes recorded. ``max_episode_steps``: time limit.
        noise: action-noise std per episode, cycled. ``return_scale``: returns-to-go are divided by it.
        ars: how the behaviour policy is trained. ``seed``: seeds the recorded episodes.
    """

    name: str
    env_id: str
    dataset_id: str
    episodes: int = 120
    max_episode_steps: int = 200
    noise: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0)
    return_scale: float = 100.0
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    ars: ARSSettings = field(default_factory=ARSSettings)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what a cached dataset is checked against)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> Task:
        return dataclasses.replace(self, **changes)


TASKS: dict[str, Task] = {
    "halfcheetah": Task("halfcheetah", "HalfCheetah-v5", "eva/halfcheetah-ars-v0"),
    "walker2d": Task("walker2d", "Walker2d-v5", "eva/walker2d-ars-v0", ars=ARSSettings(iterations=60, seed=1)),
}
"""The tasks by alias."""


def get_task(task: str | Task) -> Task:
    """The :class:`Task` of an alias (or ``task`` itself).

    Raises:
        InvalidConfigError: an unknown alias.
    """
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise InvalidConfigError(f"task={task!r} is not a known RL task; pick one of {sorted(TASKS)}.")
    return TASKS[task]


@dataclass(frozen=True)
class TaskData:
    """A task's recorded episodes and what scoring needs: the state statistics and the range of the
    dataset's episode returns (``low`` = min, ``high`` = max)."""

    task: Task
    episodes: tuple[Trajectory, ...]
    stats: StateStats
    low: float
    high: float


def dataset_record_path(task: Task) -> Path:
    """``<cache>/rl-datasets/<task name>.json``."""
    return task_record_path(task.name)


def load_task_data(task: str | Task) -> TaskData:
    """The cached dataset of ``task`` with its statistics.

    Raises:
        MissingPretrainingError: the dataset was never built, or was built with other settings.
    """
    from .datasets import load_dataset

    resolved = get_task(task)
    record = dataset_record_path(resolved)
    if not record.is_file():
        raise MissingPretrainingError(
            f"the {resolved.name!r} dataset is not in the cache ({record} is missing); build it with "
            f"`{BUILD_COMMAND}` (set EVA_CACHE_DIR to use another cache)."
        )
    saved = json.loads(record.read_text())
    if saved["settings"] != resolved.to_json():
        raise MissingPretrainingError(
            f"the cached {resolved.name!r} dataset ({record}) was built with other settings; rebuild it with "
            f"`{BUILD_COMMAND}`."
        )
    episodes = tuple(trajectories(load_dataset(resolved.dataset_id, cache_dir(DATASETS_CACHE))))
    returns = [e.episode_return for e in episodes]
    return TaskData(resolved, episodes, StateStats.of(episodes), min(returns), max(returns))

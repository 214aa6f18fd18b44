"""The rl comparison: behaviour policies (:mod:`.policies`, ARS), minari datasets recorded in gymnasium
MuJoCo environments (:mod:`.datasets`), the tasks (:mod:`.tasks`), the pretrained Decision Transformer
(:mod:`.pretrain`, :mod:`.models`), rollouts and scores (:mod:`.evaluation`) and the fine-tuning runs
(:mod:`.recipe`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..comparison import run_arguments
from ..records import RunRecord
from .pretrain import PRETRAINED, PretrainSettings, pretrain
from .recipe import METRICS, finetune
from .tasks import TASKS, Task, TaskData, get_task, load_task_data

__all__ = [
    "METRICS",
    "PRETRAINED",
    "TASKS",
    "PretrainSettings",
    "Task",
    "TaskData",
    "finetune",
    "get_task",
    "load_task_data",
    "pretrain",
    "run_from_args",
]


def run_from_args(args: argparse.Namespace, method: str, seed: int) -> RunRecord:
    """Offline RL: a Decision Transformer pretrained on one task (``dt-halfcheetah``, built by
    ``benchmarks/pretrain_rl.py``) fine-tuned on another task's dataset; held-out by rollouts in the
    environment (``--episodes``) and action MSE on held-out episodes (``--dev-limit``)."""
    if not Path(args.model).exists():  # an alias: build its datasets and model once (cached)
        pretrain(args.model)
    return finetune(
        args.model,
        args.task,
        method,
        **run_arguments(args, seed),
        train_limit=args.train_limit,
        dev_limit=args.dev_limit or 16,
        episodes=args.episodes,
    )

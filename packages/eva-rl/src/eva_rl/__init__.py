"""eva-rl: EVA (Explained Variance Adaptation) for Decision Transformers in offline RL.

``eva_rl.init(model, loader)`` fits EVA on the return/state/action tokens of a transformers
``DecisionTransformerModel`` (padded timesteps excluded) and returns a peft LoRA model whose embedding
and prediction layers are trained in full; the ``rl`` plugin (``eva`` entry-point group) tells
eva-core which layers to adapt and how to read trajectory batches. :mod:`eva_rl.policies` trains
behaviour policies (ARS), :mod:`eva_rl.datasets` records minari datasets, :mod:`eva_rl.trajectories`
cuts Decision Transformer batches, :mod:`eva_rl.evaluation` scores rollouts, :mod:`eva_rl.pretrain`
builds the cached source model and datasets, :mod:`eva_rl.recipe` fine-tunes and evaluates.
"""

from __future__ import annotations

from .api import DEFAULTS, DOMAIN, default_lora_config, init
from .architectures import MODULES_TO_SAVE, is_decision_transformer, target_modules
from .datasets import load_dataset, make_dataset, minari_root
from .errors import MissingPretrainingError, TrajectoryError
from .evaluation import action_loss, held_out_loss, normalized_return, rollout_returns
from .models import decision_transformer
from .policies import ARSSettings, LinearPolicy, NoisyPolicy, train_ars
from .pretrain import PRETRAINED, PretrainSettings, load_pretrained, pretrain
from .recipe import METRICS, finetune
from .tasks import TASKS, Task, TaskData, get_task, load_task_data
from .tokens import token_mask
from .trajectories import StateStats, Trajectory, TrajectoryBatches, returns_to_go, trajectories, trajectory_batches

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "DOMAIN",
    "METRICS",
    "MODULES_TO_SAVE",
    "PRETRAINED",
    "TASKS",
    "ARSSettings",
    "LinearPolicy",
    "MissingPretrainingError",
    "NoisyPolicy",
    "PretrainSettings",
    "StateStats",
    "Task",
    "TaskData",
    "Trajectory",
    "TrajectoryBatches",
    "TrajectoryError",
    "action_loss",
    "decision_transformer",
    "default_lora_config",
    "finetune",
    "get_task",
    "held_out_loss",
    "init",
    "is_decision_transformer",
    "load_dataset",
    "load_pretrained",
    "load_task_data",
    "make_dataset",
    "minari_root",
    "normalized_return",
    "pretrain",
    "returns_to_go",
    "rollout_returns",
    "target_modules",
    "token_mask",
    "train_ars",
    "trajectories",
    "trajectory_batches",
]

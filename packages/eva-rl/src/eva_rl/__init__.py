"""eva-rl: EVA (Explained Variance Adaptation) for Decision Transformers in offline RL.

``eva_rl.init(model, loader)`` fits EVA on the return/state/action tokens of a transformers
``DecisionTransformerModel`` (padded timesteps excluded) and returns a peft LoRA model whose embedding
and prediction layers are trained in full; the ``rl`` plugin (``eva`` entry-point group) tells eva-core
which layers to adapt, how to read trajectory batches and the domain's defaults, so ``eva_core.init``
gives the same. ``trajectory_batches`` cuts those batches from episodes (:class:`Trajectory`, or a minari
dataset); ``load_pretrained`` loads a Decision Transformer the ``eva-lora fit`` aliases name.

Nothing here needs jax, MuJoCo or OpenGL; reading minari datasets on the command line needs the
``minari`` extra. Behaviour policies, dataset generation, pretraining and the fine-tuning comparison are
the harness's (``eva_bench.rl``, in the eva repository).
"""

from __future__ import annotations

from .batches import trajectory_batches
from .cli import load_pretrained
from .errors import MissingExtraError, MissingPretrainingError, TrajectoryError
from .initialization import init
from .trajectories import StateStats, Trajectory, trajectories

__version__ = "0.1.0"

__all__ = [
    "MissingExtraError",
    "MissingPretrainingError",
    "StateStats",
    "Trajectory",
    "TrajectoryError",
    "init",
    "load_pretrained",
    "trajectories",
    "trajectory_batches",
]

"""Errors of eva-rl: cached artifacts that are not built yet, batches it cannot read, and eva-core's
``MissingExtraError`` (minari, to read minari datasets, is the ``minari`` extra)."""

from __future__ import annotations

from eva_core import EvaError
from eva_core.errors import MissingDataError as _CoreMissingDataError
from eva_core.errors import MissingExtraError

__all__ = ["MissingExtraError", "MissingPretrainingError", "TrajectoryError"]


class MissingPretrainingError(_CoreMissingDataError):
    """The pretrained Decision Transformer or a task's dataset is not in the cache; the message names the
    command that builds it (``python benchmarks/pretrain_rl.py``)."""


class TrajectoryError(EvaError, ValueError):
    """An episode or a batch of trajectories has inconsistent shapes or is too short."""

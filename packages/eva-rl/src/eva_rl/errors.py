"""Errors of eva-rl: artifacts it builds that are not there yet, batches it cannot read."""

from __future__ import annotations

from eva_core import EvaError
from eva_core import MissingDataError as _CoreMissingDataError

__all__ = ["MissingPretrainingError", "TrajectoryError"]


class MissingPretrainingError(_CoreMissingDataError):
    """The pretrained Decision Transformer or a generated dataset is not in the cache; the message names
    the command that builds it (``python benchmarks/pretrain_rl.py``)."""


class TrajectoryError(EvaError, ValueError):
    """An episode or a batch of trajectories has inconsistent shapes or is too short."""

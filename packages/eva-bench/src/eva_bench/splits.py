"""The validation split a converged run tunes on: the last examples of the training data, set apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from eva_core.errors import InvalidConfigError

__all__ = ["carve"]

Item = TypeVar("Item")


def carve(examples: Sequence[Item], validation: int) -> tuple[list[Item], list[Item]]:
    """``(training, validation)``: the last ``validation`` of ``examples`` set apart (none when 0).

    The split depends on the order of ``examples`` only, never on a run's seed, so every method and seed
    tunes on the same validation examples and never trains on them.

    Raises:
        InvalidConfigError: ``validation`` is negative or leaves no training example.
    """
    if validation < 0 or validation >= len(examples):
        raise InvalidConfigError(
            f"validation={validation} must be in [0, {len(examples) - 1}]: the training data has {len(examples)} "
            "examples and at least one must stay for training; lower it (or raise the training limit)."
        )
    cut = len(examples) - validation
    return list(examples[:cut]), list(examples[cut:])

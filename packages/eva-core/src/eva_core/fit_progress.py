"""Where a fit stands (what a checkpoint records and a resumed fit starts from), and how a resumed fit
catches up with its batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .distributed import ProcessGroup
from .errors import CheckpointMismatchError

__all__ = ["FitProgress", "skip_consumed"]


@dataclass
class FitProgress:
    """Where a fit stands: ``steps`` taken (batches per rank), this rank's ``consumed`` batches, and the
    ``history`` of convergence checks (``{"step", "converged"}`` each: layers converged after that step)."""

    steps: int = 0
    consumed: int = 0
    history: list[dict[str, int]] = field(default_factory=list)


def skip_consumed(stream: Iterator[Any], count: int, group: ProcessGroup | None) -> Iterator[Any]:
    """``stream`` after its first ``count`` batches (those a resumed fit consumed before its checkpoint).

    Raises:
        CheckpointMismatchError: ``stream`` has fewer than ``count`` batches.
    """
    end = object()

    def skip() -> None:
        for seen in range(count):
            if next(stream, end) is end:
                raise CheckpointMismatchError(
                    f"resume: the batches ran out after {seen} but the checkpoint had consumed {count}; pass the "
                    "same batches, in the same order, as the interrupted fit."
                )

    if count:
        skip() if group is None else group.agree(skip, "while skipping the batches consumed before the checkpoint")
    return stream

"""The processes a fit runs on, behind one interface, so the loop has one path.

A fit on one process is a fit on a group of one: :class:`SingleProcess` answers every call of
:class:`ProcessGroup` by doing nothing or by running the action at once, as ``contextlib.nullcontext``
stands in for a context manager. The ``torch.distributed`` implementation is in :mod:`.distributed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..capture.recorder import InputRecorder, StatisticsFactory

__all__ = ["ProcessGroup", "SingleProcess"]

T = TypeVar("T")


class ProcessGroup(Protocol):
    """The processes of one fit, as the loop and the checkpoints use them.

    Every process runs the same calls in the same order; a call that communicates returns the same
    decision on every process.
    """

    @property
    def rank(self) -> int:
        """This process's index, 0 <= rank < size."""

    @property
    def size(self) -> int:
        """W, the number of processes."""

    @property
    def layout_pending(self) -> bool:
        """A process met a layer the others do not know yet (saved in checkpoints)."""

    def step(self, run: Callable[[], bool], recorder: InputRecorder) -> bool:
        """Run ``run`` (fetch one batch and run the model; False when this process has no batch left) and
        return whether any process still had a batch.

        Raises:
            BaseException: what ``run`` raised here (KeyboardInterrupt and SystemExit included).
            DistributedFitError: ``run`` raised on another process; the message names it and the cause.
        """

    def sync(self, recorder: InputRecorder) -> None:
        """Before a convergence check: give every process the statistics of all processes' rows."""

    def agree(self, action: Callable[[], T], what: str) -> T:
        """Run a local ``action`` that may fail on some processes only, and fail on every one if it did;
        ``what`` says when, in the error the others raise."""

    def gather(self, value: T) -> list[T]:
        """Every process's ``value`` (picklable), by rank."""

    def statistics_factory(self, make: StatisticsFactory) -> StatisticsFactory:
        """``make`` wrapped so that the statistics it builds can be merged across processes."""

    def resume(self, layout_pending: bool, recorder: InputRecorder) -> None:
        """A checkpoint was restored into ``recorder``, with ``layout_pending`` as it was saved."""

    def summary(self, consumed: int) -> dict[str, Any]:
        """What :attr:`EvaState.extra <eva_core.EvaState.extra>` records about the processes, given the
        batches this one ``consumed``."""


class SingleProcess:
    """A fit on this process alone: nothing to agree on, merge or exchange."""

    rank = 0
    size = 1
    layout_pending = False

    def step(self, run: Callable[[], bool], recorder: InputRecorder) -> bool:
        return run()

    def sync(self, recorder: InputRecorder) -> None:
        pass

    def agree(self, action: Callable[[], T], what: str) -> T:
        return action()

    def gather(self, value: T) -> list[T]:
        return [value]

    def statistics_factory(self, make: StatisticsFactory) -> StatisticsFactory:
        return make

    def resume(self, layout_pending: bool, recorder: InputRecorder) -> None:
        pass

    def summary(self, consumed: int) -> dict[str, Any]:
        return {}

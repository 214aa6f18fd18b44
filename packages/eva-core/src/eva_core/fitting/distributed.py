"""Data-parallel fits under ``torch.distributed``: ranks exchange statistics, never activations.

Each of the W ranks streams its own shard of the batches through its own copy of the model. After every
batch the ranks all-reduce a few flags (does any rank still have a batch, did a rank fail, did a rank meet
a layer the others have not), so a rank whose data ran out keeps taking part with zero rows, and an error
on one rank ends the fit on every rank instead of leaving the others waiting in a collective.

At each convergence check the statistics of leader i (its index in the agreed layer order) are summed
onto its *owner*, rank ``i % W``. Exact statistics of disjoint row sets add once they are kept about one
shared shift c (:meth:`GramStatistics.rebase`; c is the pooled mean of the rows at the first exchange):

    S = sum_r S_r(c)    (d_in, d_in),    m = sum_r m_r(c)    (d_in,),    n = sum_r n_r.

Sketched leaders (:class:`~eva_core.svd.SketchStatistics`) are gathered instead: each other rank folds its
sketch of the rows since the last exchange to at most l rows and sends it, with its exact mean, count,
total variance and residual bound, as one (l * d_in + 2 * d_in + 10,) float32 block; the owner merges them
into its own (:meth:`SketchStatistics.merge`: a sketch of the union, whose residual bounds add).

The owner solves the eigenproblem (or reads its sketch) and broadcasts the components, so every rank holds
the same spectra and takes the same convergence decisions. Non-owners clear their rows once sent, so memory
stays at one (d_in, d_in) matrix, or one sketch, per layer per rank. The classes that hold a layer's
statistics between exchanges are in :mod:`.shared`; ``docs/distributed.md`` gives the bytes per check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.distributed as dist

from ..errors import DistributedFitError, InvalidConfigError
from ..svd import CountStatistics, GramStatistics, InputStatistics, SketchStatistics
from .process_group import ProcessGroup, SingleProcess
from .shared import SharedCounts, SharedSketch, SharedStatistics

if TYPE_CHECKING:
    from ..capture.recorder import InputRecorder, StatisticsFactory

__all__ = ["TorchProcessGroup", "join_process_group"]

_log = logging.getLogger(__name__)

T = TypeVar("T")


def join_process_group(distributed: bool | None) -> ProcessGroup:
    """The processes the fit runs on: :class:`TorchProcessGroup`, or :class:`SingleProcess` for a fit on
    this process alone (no collective at all).

    ``distributed`` (``EvaConfig.distributed``) None uses ``torch.distributed`` when it is initialized with
    more than one rank; True requires it; False never uses it (every rank fits alone on its own batches).

    Raises:
        InvalidConfigError: ``distributed=True`` but no process group is initialized.
    """
    if distributed is False:
        return SingleProcess()
    ready = dist.is_available() and dist.is_initialized()
    if distributed and not ready:
        raise InvalidConfigError(
            "EvaConfig.distributed=True but torch.distributed is not initialized; launch with torchrun "
            "(or accelerate launch) and call torch.distributed.init_process_group() (accelerate's "
            "Accelerator() does it) before fit, or pass distributed=None."
        )
    if not ready or dist.get_world_size() == 1:
        return SingleProcess()
    return TorchProcessGroup()


class TorchProcessGroup:
    """The default ``torch.distributed`` group as the fit uses it (a :class:`ProcessGroup`): per-step
    agreement, statistics exchange, error propagation. Tensors travel on CUDA under NCCL, on the CPU
    otherwise."""

    def __init__(self) -> None:
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        if "nccl" in str(dist.get_backend()) and torch.cuda.is_available():  # "nccl" or "cuda:nccl,cpu:gloo"
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        self.layout_pending = False  # a rank met a layer the others do not know yet
        self.known_leaders = 0

    # agreement ---------------------------------------------------------------------------------------
    def step(self, run: Callable[[], bool], recorder: InputRecorder) -> bool:
        """Run ``run`` (fetch one batch and run the model; False when this rank has no batch left), then
        agree with the other ranks. Returns whether any rank still had a batch.

        Raises:
            BaseException: what ``run`` raised on this rank, KeyboardInterrupt and SystemExit included
                (after telling the others).
            DistributedFitError: ``run`` raised on another rank; the message names it and the cause.
        """
        has_batch, error = _attempt(run)
        flags = torch.zeros(2 + self.size, dtype=torch.float64)
        flags[0] = float(bool(has_batch))
        flags[1] = float(len(recorder.order) != self.known_leaders)
        flags[2 + self.rank] = float(error is not None)
        flags = self._all_reduce(flags)
        self._raise_failures(flags[2:], error, "while reading or running a batch")
        self.layout_pending |= bool(flags[1] > 0)
        return bool(flags[0] > 0)

    def agree(self, action: Callable[[], T], what: str) -> T:
        """Run a local ``action`` that may fail on some ranks only, and fail on every rank if it did."""
        result, error = _attempt(action)
        flags = torch.zeros(self.size, dtype=torch.float64)
        flags[self.rank] = float(error is not None)
        self._raise_failures(self._all_reduce(flags), error, what)  # re-raises ``error`` if action failed
        return cast("T", result)

    def total(self, value: float) -> float:
        """The sum of ``value`` over the ranks."""
        return float(self._all_reduce(torch.tensor([value], dtype=torch.float64))[0])

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), by rank."""
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def resume(self, layout_pending: bool, recorder: InputRecorder) -> None:
        """A checkpoint was restored into ``recorder``: its leaders are known to every rank."""
        self.layout_pending = layout_pending
        self.known_leaders = len(recorder.order)

    def summary(self, consumed: int) -> dict[str, Any]:
        """``world_size`` and ``batches``, the batches all ranks consumed."""
        return {"world_size": self.size, "batches": int(self.total(consumed))}

    def _raise_failures(self, failed: torch.Tensor, error: BaseException | None, what: str) -> None:
        """After the all-reduce of every rank's failure flag (``failed``: (W,)): when a rank failed, every
        rank gathers the causes, then the failing ones re-raise their own error and the others raise
        :class:`DistributedFitError` naming the ranks and the causes."""
        ranks = [rank for rank, flag in enumerate(failed.tolist()) if flag > 0]
        if not ranks:
            return
        causes = self.gather(None if error is None else _describe(error))  # every rank knows a rank failed
        if error is not None:
            raise error
        said = "; ".join(f"rank {rank}: {causes[rank]}" for rank in ranks)
        raise DistributedFitError(
            f"EVA fit on rank {self.rank}: rank(s) {ranks} of {self.size} raised {what} ({said}), so every "
            "rank stops; their own traceback is in their logs."
        )

    # statistics ------------------------------------------------------------------------------------
    def statistics_factory(self, make: StatisticsFactory) -> StatisticsFactory:
        """Wrap a rank's statistics factory so that every layer's statistics can be merged across ranks."""

        def shared(name: str, dim: int, device: torch.device) -> InputStatistics:
            local = make(name, dim, device)
            if isinstance(local, CountStatistics):
                return SharedCounts(local, CountStatistics(dim, device, centered=local.centered))
            if isinstance(local, SketchStatistics):
                return SharedSketch(local, self)
            if not isinstance(local, GramStatistics):
                raise InvalidConfigError(
                    f"layer {name!r} (d_in={dim}) got statistics of type {type(local).__name__}, which a "
                    "distributed fit cannot merge across ranks; it merges exact statistics, sketches and "
                    "token counts only."
                )
            return SharedStatistics(local, self)

        return shared

    def sync(self, recorder: InputRecorder) -> None:
        """Agree on the measured layers, then bring every active leader's rows onto its owner."""
        if self.layout_pending:
            self._merge_layout(recorder)
            self.layout_pending = False
        self.known_leaders = len(recorder.order)
        counted = [recorder.statistics.get(name) for name in recorder.order]  # the agreed order
        self._sum_counts([stats for stats in counted if isinstance(stats, SharedCounts)])
        active = [recorder.statistics.get(name) for name in recorder.order if name in recorder.active]
        self._sum_statistics([stats for stats in active if isinstance(stats, SharedStatistics)])
        self._merge_sketches([stats for stats in active if isinstance(stats, SharedSketch)])

    def _sum_statistics(self, merged: Sequence[SharedStatistics]) -> None:
        """Sum every rank's exact statistics onto their owner (one reduce of (d_in, d_in) float64 each)."""
        if not merged:
            return
        self._anchor([stats for stats in merged if not stats.anchored])
        ready = [stats for stats in merged if stats.anchored]
        totals = torch.zeros(len(ready) + len(merged), dtype=torch.float64)
        for i, stats in enumerate(ready):
            totals[i] = stats.local.count
        for i, stats in enumerate(merged):
            totals[len(ready) + i] = float(not bool(stats.local.is_finite()))
        totals = self._all_reduce(totals)
        for i, stats in enumerate(merged):
            stats.finite &= bool(totals[len(ready) + i] == 0)
        if not ready:
            return
        sums = self._all_reduce(torch.cat([stats.local.shifted_sum.to(self.device) for stats in ready]))
        offset = 0
        for i, stats in enumerate(ready):
            local = stats.local
            self._reduce(local.scatter, stats.owner)
            if self.rank == stats.owner:
                local.shifted_sum.copy_(sums[offset : offset + local.dim])
                local.count.fill_(float(totals[i]))
            else:
                local.clear()
            stats.rows = float(totals[i])
            offset += local.dim

    def _merge_sketches(self, sketched: Sequence[SharedSketch]) -> None:
        """Merge every rank's sketch of each leader's rows since the last exchange into its owner's sketch.

        One all-reduce of (rows, rows sent, non-finite) per leader, then, for each leader that any other
        rank has rows for, one gather onto the owner of every rank's flushed sketch (a fixed-size float32
        block, :meth:`SharedSketch.packed`). A gather rather than an all-gather: only the owner needs the
        blocks, so the other ranks neither receive nor hold W sketches per layer.
        """
        if not sketched:
            return
        flags = torch.zeros(3 * len(sketched), dtype=torch.float64)  # (rows, rows sent, non-finite) per leader
        for i, stats in enumerate(sketched):
            rows = float(stats.local.rows_seen())
            flags[3 * i] = rows
            flags[3 * i + 1] = 0.0 if self.rank == stats.owner else rows
            flags[3 * i + 2] = float(not bool(stats.local.is_finite()))
        flags = self._all_reduce(flags)
        for i, stats in enumerate(sketched):
            stats.finite &= bool(flags[3 * i + 2] == 0)
            stats.rows = float(flags[3 * i])
            if flags[3 * i + 1] == 0:  # only the owner had rows: they are in its sketch already
                continue
            owner = stats.owner
            if self.rank != owner:
                dist.gather(stats.packed().to(self.device), None, dst=owner)  # (P,)
                stats.local.clear()
                continue
            blocks = [torch.empty(stats.block_size(), device=self.device) for _ in range(self.size)]
            dist.gather(torch.zeros_like(blocks[owner]), blocks, dst=owner)  # its own rows are in its sketch
            stats.absorb([block for rank, block in enumerate(blocks) if rank != owner])

    def _sum_counts(self, shared: Sequence[SharedCounts]) -> None:
        """Add every rank's token counts since the last exchange to every rank's totals (one all-reduce;
        ``shared`` lists the agreed leaders in the same order on every rank)."""
        if not shared:
            return
        summed = self._all_reduce(torch.cat([stats.local.counts.to("cpu") for stats in shared]))
        offset = 0
        for stats in shared:
            stats.total.add(summed[offset : offset + stats.dim])
            stats.local.clear()
            offset += stats.dim

    def _anchor(self, pending: Sequence[SharedStatistics]) -> None:
        """Move each statistics onto the pooled mean of all ranks' rows (once it has rows anywhere)."""
        if not pending:
            return
        packed = []
        for stats in pending:
            local = stats.local
            n = float(local.count)
            mean_sum = torch.zeros(local.dim, dtype=torch.float64)
            if local.shift is not None and n > 0:
                mean_sum = (n * local.shift.double() + local.shifted_sum.double()).cpu()  # (d_in,) sum of rows
            packed.append(torch.cat([torch.tensor([n], dtype=torch.float64), mean_sum]))
        pooled = self._all_reduce(torch.cat(packed))
        offset = 0
        for stats in pending:
            total, row_sum = float(pooled[offset]), pooled[offset + 1 : offset + 1 + stats.dim]  # N, (d_in,)
            offset += 1 + stats.dim
            if total > 0:
                stats.local.rebase((row_sum / total).float())
                stats.anchored = True

    def _merge_layout(self, recorder: InputRecorder) -> None:
        mine: dict[str, Any] = {
            "order": list(recorder.order),
            "leader_of": dict(recorder.leader_of),
            "dims": {name: stats.dim for name, stats in recorder.statistics.items()},
        }
        order: list[str] = []
        leader_of: dict[str, str] = {}
        dims: dict[str, int] = {}
        for rank, theirs in enumerate(self.gather(mine)):
            order.extend(name for name in theirs["order"] if name not in order)
            dims.update(theirs["dims"])
            for name, leader in theirs["leader_of"].items():
                if leader_of.setdefault(name, leader) != leader:
                    raise DistributedFitError(
                        f"layer {name!r} shares its input with {leader_of[name]!r} on one rank but with "
                        f"{leader!r} on rank {rank}; pass share_identical_inputs=False for a distributed fit "
                        "of this model."
                    )

        def adopt() -> None:
            for name in recorder.adopt(order, leader_of):
                if name not in recorder.statistics:
                    recorder.statistics[name] = recorder.make_statistics(name, dims[name], self.device)

        self.agree(adopt, "while setting up the statistics of layers met on other ranks")
        for index, name in enumerate(recorder.order):
            stats = recorder.statistics.get(name)
            if isinstance(stats, (SharedStatistics, SharedSketch)):
                stats.owner = index % self.size
        _log.debug("rank %d: %d measured inputs agreed across %d ranks", self.rank, len(order), self.size)

    # collectives -----------------------------------------------------------------------------------
    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        moved = tensor.to(self.device)
        dist.all_reduce(moved)
        return moved.to(tensor.device)

    def _reduce(self, tensor: torch.Tensor, owner: int) -> None:
        moved = tensor.to(self.device)
        dist.reduce(moved, dst=owner)
        if moved is not tensor and self.rank == owner:
            tensor.copy_(moved)

    def broadcast(self, tensor: torch.Tensor, owner: int) -> torch.Tensor:
        moved = tensor.to(self.device)
        dist.broadcast(moved, src=owner)
        return moved


def _attempt(action: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """``(action(), None)``, or ``(None, error)`` when it raised.

    KeyboardInterrupt and SystemExit are caught too, to be re-raised once the other ranks know: in a
    notebook the interrupted process lives on, and the others would otherwise wait in the next collective
    until the process group's timeout (30 minutes under gloo), then die with the backend's error.
    """
    try:
        return action(), None
    except BaseException as error:  # re-raised by _raise_failures after the all-reduce
        return None, error


def _describe(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` of ``error`` on one line, at most ``limit`` characters (sent to the other ranks)."""
    message = " ".join(str(error).split())
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

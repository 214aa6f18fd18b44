"""What each kind of statistics costs, and the choice between them that both ``fit`` and ``eva_core.plan`` make.

A measured input of width d_in fed N rows per batch can be measured three ways (``eva_core.svd``):

============  =====================================  ======================  ==============================
kind          held between batches (bytes)           update (FLOPs per row)  solve at a check (FLOPs)
============  =====================================  ======================  ==============================
exact (Gram)  8 d^2 + 16 d + 4 d w (warm start)      2 d^2 (1.5 d^2 from     2 * 2 d^2 w (two warm-started
                                                     d = 1024: upper blocks) subspace iterations; eigh,
                                                                             9 d^3, where there is no w)
sketch        at most 4 * 3 l d + 8 d (sketch, under 12 l d                  18 l^2 d + 6 l k d (the eigh of
              2l pending rows, float64 mean)                                 its (3l, 3l) Gram)
counts        8 V                                    1                       V
============  =====================================  ======================  ==============================

with k = ``config.max_components`` (capped at d), w = min(d, 2k) the eigensolver's block (none below
d = 256 or where it would be half of d: the dense solver answers then), l = ``sketch_width(k)``
(:mod:`eva_core.svd.sketch`, capped at d) and V = ``num_embeddings``. Transients (float32 rows in): the
Gram update makes float32, bool and float64 (N, d) copies of the rows and a float32 d x d block product
(17 N d + 4 d^2 bytes, a quarter of that square for wide inputs); its solve makes a float32 copy of the
scatter (4 d^2). The sketch update copies the rows once to leave the masked ones out (4 N d), then works
2l rows at a time: their float64 and float32 copies, the buffer concatenated and a fold's copies of 3l rows
(about 4 N d + 72 l d).

**The choice** (:class:`StatisticsChooser`), per measured input in the order the fit first meets them:
embeddings are counted; ``statistics="sketch"`` sketches every other input; ``"exact"`` takes the Gram
while its 8 d^2 bytes fit what is left of the budget; ``"auto"`` takes it only where, in addition, its update
costs at most :data:`EXACT_COST_FACTOR` times the sketch's per row. The factor is 4 because the Gram
update is one large matrix product, which runs much closer to a device's peak than the sketch's thin
products and small eigendecompositions, and because exact statistics carry no approximation error: at
rank 16, rho 2 (l = 96) the rule keeps every input up to d = 3072 exact (all of SmolLM2, Gemma-3-270M and
MiniLM) and sketches the 4096- and 11008-wide inputs of a 7B model, whose Gram updates cost 5 and 14 times
the sketch's.

**The budget** (``gram_memory_bytes=None``): a quarter of the free memory of the model's device when the fit
starts (CUDA: ``torch.cuda.mem_get_info``; CPU: the available physical pages; elsewhere 4 GiB). The other
three quarters are left to the forward's activations, the transients above, and whatever else the process
allocates during the fit. Under ``torch.distributed`` every rank takes the smallest budget of all ranks, so
that all of them make the same choices.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from ..svd import CountStatistics, GramStatistics, InputStatistics, SketchStatistics
from ..svd.sketch import sketch_width

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..config import EvaConfig
    from .process_group import ProcessGroup

__all__ = [
    "BUDGET_FRACTION",
    "EXACT_COST_FACTOR",
    "FALLBACK_BUDGET",
    "Choice",
    "Kind",
    "StatisticsChooser",
    "flops",
    "free_memory",
    "gram_budget",
    "size",
    "sketch_width",
    "solve_flops",
    "statistic_bytes",
    "transient_bytes",
    "update_flops",
]

_log = logging.getLogger(__name__)

Kind = Literal["exact", "sketch", "counts"]
EXACT_COST_FACTOR = 4.0
"""``statistics="auto"`` keeps exact statistics where their update costs at most this many times the sketch's."""
BUDGET_FRACTION = 0.25
"""The share of the device's free memory that ``gram_memory_bytes=None`` gives the exact statistics."""
FALLBACK_BUDGET = 4 * 1024**3
"""The budget where the free memory cannot be read (neither CUDA nor a CPU with ``SC_AVPHYS_PAGES``)."""
_SPLIT_AT = 1024  # GramStatistics forms only the upper blocks from this width on
_DENSE_BELOW = 256  # the eigensolver answers with eigh below this width (no warm-start basis kept)


def _solver_block(dim: int, k: int) -> int:
    """w, the columns of the warm-start basis the eigensolver keeps (0 when the dense solver answers)."""
    width = min(dim, k + max(8, k))
    return 0 if dim <= _DENSE_BELOW or width >= dim // 2 else width


def statistic_bytes(kind: Kind, dim: int, max_components: int) -> int:
    """The bytes the statistics of one measured input ``dim`` wide hold (at most, for the sketch)."""
    k = min(max_components, dim)
    if kind == "counts":
        return 8 * dim
    if kind == "exact":
        return 8 * dim * dim + 16 * dim + 4 * dim * _solver_block(dim, k)
    width = min(sketch_width(max_components), dim)
    return 4 * 3 * width * dim + 8 * dim


def update_flops(kind: Kind, dim: int, max_components: int) -> float:
    """FLOPs of folding one row into the statistics of an input ``dim`` wide."""
    if kind == "counts":
        return 1.0
    if kind == "exact":
        return (1.5 if dim >= _SPLIT_AT else 2.0) * dim * dim
    return 12.0 * min(sketch_width(max_components), dim) * dim


def solve_flops(kind: Kind, dim: int, max_components: int) -> float:
    """FLOPs of reading the top components at one convergence check."""
    k = min(max_components, dim)
    if kind == "counts":
        return float(dim)
    if kind == "exact":
        block = _solver_block(dim, k)
        return 4.0 * dim * dim * block if block else 9.0 * dim**3  # eigh of the dense matrix
    width = min(sketch_width(max_components), dim)
    return 18.0 * width * width * dim + 6.0 * width * k * dim


def transient_bytes(kind: Kind, dim: int, rows: int, max_components: int) -> int:
    """The largest temporary memory of one update of ``rows`` rows or one solve."""
    width = min(sketch_width(max_components), dim)
    if kind == "counts":
        return 16 * rows
    if kind == "sketch":
        return 4 * rows * dim + 72 * width * dim
    block = dim - dim // 2 if dim >= _SPLIT_AT else dim
    return max(17 * rows * dim + 4 * block * block, 4 * dim * dim)


def free_memory(device: torch.device) -> int | None:
    """The free memory of ``device`` in bytes: ``torch.cuda.mem_get_info`` on CUDA, the available physical
    pages on a CPU that reports them; None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):  # no os.sysconf (Windows) or no such name (macOS)
            return None
    return None


def gram_budget(config: EvaConfig, device: torch.device | None, group: ProcessGroup | None = None) -> int:
    """``config.gram_memory_bytes``, or when None :data:`BUDGET_FRACTION` of the free memory of ``device``
    (the CPU when None), the smallest over the ranks of ``group``."""
    if config.gram_memory_bytes is not None:
        return config.gram_memory_bytes
    free = free_memory(device or torch.device("cpu"))
    budget = FALLBACK_BUDGET if free is None else int(free * BUDGET_FRACTION)
    if group is not None and group.size > 1:
        budget = min(group.gather(budget))
    _log.info("gram_memory_bytes=None: %.2f GiB for exact statistics on %s", budget / 1024**3, device or "cpu")
    return budget


@dataclass(frozen=True)
class Choice:
    """How one measured input is measured, and why (a few words, for logs and the plan's table)."""

    kind: Kind
    reason: str


class StatisticsChooser:
    """Chooses, then builds, the statistics of each measured input (the module docstring states the rule).

    Args:
        config: the fit's settings (``statistics``, ``max_components``, ``centered``, ``seed``).
        budget: the bytes the exact statistics may take together (:func:`gram_budget`).
        counted: the layers whose rows are one-hot token ids: they get counts.
    """

    def __init__(self, config: EvaConfig, budget: int, counted: set[str] | None = None) -> None:
        self.config = config
        self.left = budget
        self.counted = counted or set()
        self.chosen: dict[str, Kind] = {}  # every input's kind, in the order chosen (saved in checkpoints)
        self.reuse: Mapping[str, Kind] = {}  # kinds a resumed fit takes from its checkpoint

    def decide(self, name: str, dim: int) -> Choice:
        """The kind of input ``name`` (``dim`` wide); an exact choice takes its bytes from the budget."""
        choice = self._rule(name, dim)
        if choice.kind == "exact":
            self.left -= 8 * dim * dim
        if choice.kind == "sketch":
            _log.info("layer %r (d_in=%d) is measured with a streaming sketch: %s", name, dim, choice.reason)
        self.chosen[name] = choice.kind
        return choice

    def _rule(self, name: str, dim: int) -> Choice:
        if name in self.reuse:
            return Choice(self.reuse[name], "as in the checkpoint resumed from")
        if name in self.counted:
            return Choice("counts", "one-hot token ids")
        setting, k = self.config.statistics, self.config.max_components
        if setting == "sketch":
            return Choice("sketch", "statistics='sketch'")
        ratio = update_flops("exact", dim, k) / update_flops("sketch", dim, k)
        if setting == "auto" and ratio > EXACT_COST_FACTOR:
            return Choice("sketch", f"its Gram update costs {ratio:.1f}x the sketch's (> {EXACT_COST_FACTOR:g}x)")
        if 8 * dim * dim > self.left:
            return Choice(
                "sketch", f"its Gram ({size(8 * dim * dim)}) exceeds the {size(self.left)} left of gram_memory_bytes"
            )
        return Choice("exact", f"fits the budget; update {ratio:.1f}x the sketch's")

    def make(self, name: str, dim: int, device: torch.device) -> InputStatistics:
        """The statistics of input ``name`` (``dim`` wide) on ``device`` (the recorder's factory)."""
        kind, config = self.decide(name, dim).kind, self.config
        if kind == "counts":
            return CountStatistics(dim, device, centered=config.centered)
        if kind == "exact":
            return GramStatistics(dim, device, centered=config.centered, seed=config.seed)
        return SketchStatistics(dim, sketch_width(config.max_components), device, centered=config.centered)


def size(count: float) -> str:
    """Bytes in binary units: ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def flops(count: float) -> str:
    """FLOPs with an SI prefix: ``"55.2 TFLOP"``."""
    for prefix in ("", "k", "M", "G"):
        if abs(count) < 1000:
            return f"{count:.3g} {prefix}FLOP"
        count /= 1000
    return f"{count:.3g} TFLOP"

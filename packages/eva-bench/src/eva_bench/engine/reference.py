"""The reference subspaces of the stopping benchmark: exact top eigenvectors of a large pool of batches.

Rows are captured by eva-core's own :class:`~eva_core.capture.InputRecorder` with the domain plugin's
``prepare_batch`` and rows functions, so the pool's rows are masked exactly as a fit masks them (attention
mask, answer tokens, image tokens, real timesteps) and layers that share an input (q/k/v) are measured once,
by their group's leader. Per leader the pool keeps, in float64, the scatter ``S = sum (x - s)(x - s)^T``,
``m = sum (x - s)`` and ``n`` about a fixed shift ``s`` (the first batch's mean), separately for the
even and the odd batches; the centered scatter of a set is ``S - m m^T / n``, and its top eigenvectors come
from a float64 ``scipy.linalg.eigh``. The products ``(x - s)^T (x - s)`` of one batch run in float32 on the
shifted rows and are summed in float64: their relative rounding (~1e-6 of the scatter's norm) moves a
subspace by far less than the errors measured here (the test checks the reference against a float64
eigendecomposition of the concatenated rows).

The halves give the pool's own noise: the error between the even and the odd halves' subspaces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn

from eva_core import plugin_manager
from eva_core.capture import InputRecorder, StopForward
from eva_core.fitting import stopping

__all__ = ["PoolReference", "count_rows", "pool_reference", "subspace_error"]


@dataclass
class PoolReference:
    """What :func:`pool_reference` measured.

    Attributes:
        leader_of: targeted layer -> the layer whose input statistics it shares (itself for a leader).
        vectors: leader -> (k, d_in) float64, the pool's top-k eigenvectors, by decreasing eigenvalue.
        halves: leader -> ((k, d_in), (k, d_in)), the same for the even and the odd pool batches.
        values: leader -> (k + 1,) float64, the pool's top eigenvalues of the scatter matrix.
        rows: leader -> the pool rows it measured.
    """

    leader_of: dict[str, str]
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)
    halves: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


class _Scatter:
    """Float64 centered-scatter statistics of one leader's rows, for the even and the odd batches apart,
    plus the rows of each counted batch. ``cursor`` says which batch is running: ``{"batch": b, "count":
    bool}``; a counted batch only adds to the row counts."""

    def __init__(self, dim: int, cursor: dict[str, Any]) -> None:
        self.dim = dim
        self.cursor = cursor
        self.scatter = torch.zeros(2, dim, dim, dtype=torch.float64)  # (2, d_in, d_in)
        self.sums = torch.zeros(2, dim, dtype=torch.float64)  # (2, d_in)
        self.counts = [0, 0]
        self.shift: torch.Tensor | None = None  # (d_in,) float64
        self.counted: dict[int, int] = {}

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``rows`` (N, d_in) where ``mask`` (N,) is true."""
        kept = rows if mask is None else rows[mask.bool()]  # (N', d_in)
        batch = self.cursor["batch"]
        if self.cursor["count"]:
            self.counted[batch] = self.counted.get(batch, 0) + len(kept)
            return
        if not len(kept):
            return
        if self.shift is None:
            self.shift = kept.double().mean(0)
        shifted = kept.double() - self.shift  # (N', d_in)
        half = batch % 2
        product = shifted.float().T @ shifted.float()  # (d_in, d_in), float32
        self.scatter[half] += product.double()
        self.sums[half] += shifted.sum(0)
        self.counts[half] += len(kept)

    def state_dict(self) -> dict[str, Any]:  # the recorder copies a group's statistics when it splits
        return {"scatter": self.scatter, "sums": self.sums, "counts": list(self.counts), "shift": self.shift}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scatter, self.sums = state["scatter"].clone(), state["sums"].clone()
        self.counts, self.shift = list(state["counts"]), state["shift"]

    def top(self, k: int, halves: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The top ``k`` eigenvectors (k, d_in) and ``k + 1`` eigenvalues of the centered scatter of the
        rows of ``halves`` (0 = even batches, 1 = odd)."""
        s = sum(self.scatter[h] for h in halves)
        m = sum(self.sums[h] for h in halves)
        n = sum(self.counts[h] for h in halves)
        centered = (s - torch.outer(m, m) / max(n, 1)).numpy()  # (d_in, d_in)
        top = min(k + 1, self.dim)
        values, vectors = scipy.linalg.eigh(centered, subset_by_index=[self.dim - top, self.dim - 1])
        order = np.argsort(values)[::-1].copy()
        return torch.from_numpy(vectors[:, order[:k]].T.copy()), torch.from_numpy(values[order].copy())


def pool_reference(model: nn.Module, pool: Sequence[Any], targets: str, k: int) -> PoolReference:
    """The top-``k`` input subspace of every layer ``targets`` matches, over every row of ``pool``.

    Args:
        model: in eval mode; it is not changed.
        pool: the batches, as the model's domain plugin takes them.
        targets: a regex of whole module names.
        k: eigenvectors kept per layer (the largest rank a layer may be allocated).
    """
    leader_of, statistics = _record(model, pool, targets, counting=False)
    reference = PoolReference(leader_of=leader_of)
    for leader, stats in statistics.items():
        reference.vectors[leader], reference.values[leader] = stats.top(k, (0, 1))
        reference.halves[leader] = (stats.top(k, (0,))[0], stats.top(k, (1,))[0])
        reference.rows[leader] = sum(stats.counts)
    return reference


def count_rows(model: nn.Module, batches: Sequence[Any], targets: str) -> tuple[dict[str, str], dict[str, list[int]]]:
    """``(leader_of, counts)``: every targeted layer's leader, and per leader the rows it measures in each
    of ``batches`` (to check a fit's ``rows``)."""
    leader_of, statistics = _record(model, batches, targets, counting=True)
    return leader_of, {leader: [s.counted.get(b, 0) for b in range(len(batches))] for leader, s in statistics.items()}


def _record(
    model: nn.Module, batches: Sequence[Any], targets: str, counting: bool
) -> tuple[dict[str, str], dict[str, _Scatter]]:
    """Feed ``batches`` through ``model`` under eva-core's recorder, as a fit would; per leader its
    :class:`_Scatter` (rows only counted when ``counting``)."""
    hooks = plugin_manager().for_model(model)
    config = hooks.config(model, None, {"target_modules": targets})
    layers = hooks.layers(model, config)
    cursor: dict[str, Any] = {"batch": 0, "count": counting}
    statistics: dict[str, _Scatter] = {}

    def make(name: str, dim: int, device: torch.device) -> Any:
        statistics[name] = _Scatter(dim, cursor)
        return statistics[name]

    recorder = InputRecorder(layers, hooks.rows_functions(layers), make)
    with torch.no_grad(), recorder:
        for b, batch in enumerate(batches):
            cursor["batch"] = b
            prepared = hooks.prepare_batch(batch, model, config)
            if prepared is None:
                raise TypeError(f"no eva plugin prepares a {type(batch).__name__} batch for this model")
            recorder.begin_batch(prepared.row_mask)
            with contextlib.suppress(StopForward):
                model(*prepared.args, **prepared.kwargs)
            recorder.end_batch()
    return dict(recorder.leader_of), {leader: statistics[leader] for leader in recorder.statistics}


def subspace_error(components: torch.Tensor, reference: torch.Tensor) -> float:
    """``1 - ||U* U^T||_F^2 / k``: the mean squared sine of the principal angles between the row spaces of
    ``components`` (k, d_in) and of the first ``k`` rows of ``reference`` (>= k, d_in), both orthonormal;
    0 for the same subspace, 1 for orthogonal ones."""
    return stopping.subspace_error(components, reference[: components.shape[0]])

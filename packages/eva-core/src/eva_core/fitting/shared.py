"""One layer's statistics in a distributed fit, as each rank holds them between exchanges.

Leader i (its index in the agreed layer order) is *owned* by rank ``i % W``. Between two exchanges every
rank adds its own rows to ``local``; at an exchange (:meth:`TorchProcessGroup.sync
<eva_core.fitting.distributed.TorchProcessGroup.sync>`) the other ranks send theirs to the owner, which
folds them in, and clear it. The owner therefore holds the statistics of every rank's rows up to the last
exchange; at a check it solves and broadcasts the top components, so every rank gets the same spectrum.

- :class:`SharedStatistics`: exact Gram statistics; the owner receives their sum (a reduce).
- :class:`SharedSketch`: a streaming sketch; the owner receives every rank's sketch (a gather) and
  merges them one by one (:meth:`SketchStatistics.merge <eva_core.svd.SketchStatistics.merge>`).
- :class:`SharedCounts`: an embedding's token counts; every rank holds the sum (an all-reduce).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ..svd import CountStatistics, GramStatistics, SketchStatistics, Spectrum

__all__ = ["SharedCounts", "SharedSketch", "SharedStatistics"]


class _Group(Protocol):
    """What the shared statistics need of the process group
    (:class:`~eva_core.fitting.distributed.TorchProcessGroup`)."""

    rank: int
    device: torch.device

    def broadcast(self, tensor: torch.Tensor, owner: int) -> torch.Tensor:
        """``tensor`` as rank ``owner`` holds it, on every rank (moved to :attr:`device`)."""
        ...


class _Local:
    """What every shared statistics has: this rank's own statistics (``local``), which take its rows."""

    local: GramStatistics | SketchStatistics | CountStatistics

    @property
    def dim(self) -> int:
        return self.local.dim

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.local.update(rows, mask)


class _Owned(_Local):
    """What the exact and the sketched shared statistics have in common: the owner, the rows of all ranks
    at the last exchange, and a top-k read by the owner and broadcast to every rank.

    Every method that communicates (:meth:`top`) is called by every rank in the same order, because every
    rank runs the same convergence checks over the same agreed layers.
    """

    local: GramStatistics | SketchStatistics

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.owner = 0
        self.rows = 0.0  # N over all ranks at the last exchange
        self.finite = True  # every rank's rows were finite at the last exchange

    def rows_seen(self) -> torch.Tensor:
        return torch.tensor(self.rows, dtype=torch.float64)

    def is_finite(self) -> torch.Tensor:
        return torch.tensor(self.finite)

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        """The owner's top-``k`` spectrum of the rows of all ranks, on every rank (a broadcast of
        ``k * (d_in + 3)`` float32)."""

        def solve() -> Spectrum:
            return self.local.top(k, previous=previous, exact=exact, accurate=accurate)

        return _broadcast_top(self.group, self.owner, solve, k, self.dim, int(self.rows), self.device)

    @property
    def device(self) -> torch.device:
        """Where the statistics live (the layer's device)."""
        raise NotImplementedError


def _broadcast_top(
    group: _Group, owner: int, solve: Callable[[], Spectrum], k: int, dim: int, rows: int, device: torch.device
) -> Spectrum:
    """``solve()`` run on ``owner`` and broadcast, packed as one (k, d_in + 3) float32 tensor: components,
    singular values, explained variance and its ratio; the spectrum lands on ``device`` on every rank."""
    packed = torch.empty(k, dim + 3, dtype=torch.float32, device=group.device)  # (k, d_in + 3)
    if group.rank == owner:
        spectrum = solve()
        packed = torch.cat(
            [
                spectrum.components,
                spectrum.singular_values[:, None],
                spectrum.explained_variance[:, None],
                spectrum.explained_variance_ratio[:, None],
            ],
            dim=1,
        ).to(device=group.device, dtype=torch.float32)
    packed = group.broadcast(packed, owner).to(device)
    return Spectrum(
        components=packed[:, :dim].contiguous(),
        singular_values=packed[:, dim].contiguous(),
        explained_variance=packed[:, dim + 1].contiguous(),
        explained_variance_ratio=packed[:, dim + 2].contiguous(),
        rows=rows,
    )


class SharedStatistics(_Owned):
    """One layer's exact statistics in a distributed fit: this rank's rows since the last exchange (all
    rows, on the owner), kept about a shift every rank agreed on (``anchored``) so that they add."""

    def __init__(self, local: GramStatistics, group: _Group) -> None:
        super().__init__(group)
        self.local: GramStatistics = local
        self.anchored = False  # kept about the shift every rank agreed on

    @property
    def device(self) -> torch.device:
        return self.local.scatter.device

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"local.{key}": value for key, value in self.local.state_dict().items()}
        state["shared"] = torch.tensor(
            [float(self.owner), float(self.anchored), self.rows, float(self.finite)], dtype=torch.float64
        )
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.local.load_state_dict(_part(state, "local."))
        owner, anchored, rows, finite = state["shared"].tolist()
        self.owner, self.anchored, self.rows, self.finite = int(owner), bool(anchored), rows, bool(finite)


class SharedSketch(_Owned):
    """One layer's streaming sketch in a distributed fit: this rank's sketch of its rows since the last
    exchange (on the owner: the merge of every rank's sketches so far).

    Sketches of disjoint row sets merge into a sketch of their union (the between-means correction row
    keeps it exactly centered) whose residual bounds add: the owner's sketch misses at most its tracked
    residual ``Delta`` of any variance, as a single process's sketch of all the rows does, and equals
    that sketch where no fold dropped anything (a layer whose rows span at most l directions).
    """

    def __init__(self, local: SketchStatistics, group: _Group) -> None:
        super().__init__(group)
        self.local: SketchStatistics = local

    @property
    def device(self) -> torch.device:
        return self.local.mean.device

    def block_size(self) -> int:
        """P, the float32 entries of :meth:`packed`: ``l * d_in + 2 * d_in + 10``."""
        return self.local.width * self.dim + 2 * self.dim + 2 * len(_SCALARS) + 2

    def packed(self) -> torch.Tensor:
        """This rank's sketch as one fixed-size float32 block (P,), for the gather onto the owner: the
        buffer folded in (:meth:`SketchStatistics.flush`, which drops something only if more than l rows
        are held), its l' <= l rows zero-padded to (l, d_in), then the float64 mean (d_in,), row count, total
        variance, residual bound, finiteness flag and l' bit-cast to float32 pairs (exact)."""
        local = self.local
        local.flush()
        rows = torch.zeros(local.width, self.dim, dtype=torch.float32, device=self.device)  # (l, d_in)
        rows[: local.sketch.shape[0]] = local.sketch
        held = local.count.new_tensor(float(local.sketch.shape[0]))
        scalars = torch.stack([local.count, local.total, local.residual, local.is_finite().double(), held])  # (5,)
        exact = torch.cat([local.mean.double(), scalars.double()])  # (d_in + 5,)
        return torch.cat([rows.reshape(-1), exact.view(torch.float32)])

    def absorb(self, blocks: list[torch.Tensor]) -> None:
        """On the owner: merge the other ranks' :meth:`packed` blocks (P,) into this rank's sketch, in rank
        order (:meth:`SketchStatistics.merge` each)."""
        width, dim = self.local.width, self.dim
        for block in blocks:
            block = block.to(self.device)
            exact = block[width * dim :].clone().view(torch.float64)  # (d_in + 5,): a copy, aligned for the cast
            held = int(exact[-1].item())
            other = SketchStatistics(dim, width, self.device, centered=self.local.centered)
            state = dict(zip(_SCALARS, exact[dim : dim + len(_SCALARS)], strict=True))
            state["sketch"] = block[: width * dim].reshape(width, dim)[:held]
            state["mean"] = exact[:dim]
            state["finite"] = state["finite"] > 0
            other.load_state_dict(state)
            self.local.merge(other)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"local.{key}": value for key, value in self.local.state_dict().items()}
        state["shared"] = torch.tensor([float(self.owner), self.rows, float(self.finite)], dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.local.load_state_dict(_part(state, "local."))
        owner, rows, finite = state["shared"].tolist()
        self.owner, self.rows, self.finite = int(owner), rows, bool(finite)


class SharedCounts(_Local):
    """An embedding's token counts in a distributed fit: this rank's since the last exchange (``local``)
    and the sum over all ranks at the last exchange (``total``, the same on every rank). Counts add
    exactly, and every rank solves the same closed-form spectrum, so :meth:`top` needs no collective."""

    local: CountStatistics

    def __init__(self, local: CountStatistics, total: CountStatistics) -> None:
        self.local, self.total = local, total

    def rows_seen(self) -> torch.Tensor:
        return self.total.rows_seen()

    def is_finite(self) -> torch.Tensor:
        return self.total.is_finite()

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        return self.total.top(k, previous=previous, exact=exact, accurate=accurate)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"local.{key}": value for key, value in self.local.state_dict().items()}
        state.update({f"total.{key}": value for key, value in self.total.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.local.load_state_dict(_part(state, "local."))
        self.total.load_state_dict(_part(state, "total."))


_SCALARS = ("count", "total", "residual", "finite")  # the sketch's float64 scalars in a packed block


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix``, the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

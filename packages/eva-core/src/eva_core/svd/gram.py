"""Exact streaming second-moment statistics of a layer's input rows.

For rows x_1..x_N (d_in wide) and a fixed shift s (the first batch's mean), we keep

    S = sum_i (x_i - s)(x_i - s)^T    (d_in, d_in), float64
    m = sum_i (x_i - s)               (d_in,), float64
    n = N

from which the centered scatter matrix is ``S - m m^T / n`` and the uncentered one
``S + s m^T + m s^T + n s s^T``. Shifting by s keeps the subtraction well conditioned when the mean
is large next to the spread. Its eigenvectors are exactly the right-singular vectors of the (centered)
row matrix, and its eigenvalues their squared singular values. One update is one matrix product; for
wide inputs only the upper block triangle is formed, which saves a quarter of the work.

The products run in float32 on rows divided by a power of two (exact) that brings their largest entry
into [0.5, 1), and are added to the float64 sums multiplied back: so inputs around 1e18 or 1e-18
neither overflow nor underflow, while the O(N d_in^2) work stays in float32. The eigensolver works on
the matrix divided by its trace, and components whose variance is below float32 noise
(:func:`~eva_core.svd.spectrum.noise_floor`) are reported with zero variance.
"""

from __future__ import annotations

import torch

from .eigensolver import top_eigenpairs
from .spectrum import Spectrum, dead_spectrum, power_of_two_above, spectrum_from

__all__ = ["GramStatistics"]

_SPLIT_AT = 1024  # from this width on, the symmetric update skips the lower-left block


class GramStatistics:
    """Exact statistics of the rows fed to one layer, in O(d_in^2) memory.

    Args:
        dim: d_in.
        device: where the statistics live (the layer's device); they never leave it during the fit.
        centered: PCA (subtract the mean) or the uncentered second moment.
        seed: seeds the eigensolver's random start.
        drop_masked: drop masked rows before the product (cheaper; on an accelerator it would synchronise
            with the host) rather than zero them; ``None`` drops them on the CPU only.
    """

    def __init__(
        self,
        dim: int,
        device: torch.device | str,
        centered: bool = True,
        seed: int = 0,
        drop_masked: bool | None = None,
    ) -> None:
        self._dim = dim
        self.centered = centered
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # (d_in, d_in)
        self.shifted_sum = torch.zeros(dim, dtype=torch.float64, device=device)  # (d_in,)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.shift: torch.Tensor | None = None  # (d_in,) float64
        self._finite = torch.ones((), dtype=torch.bool, device=device)  # every kept entry so far was finite
        self._generator = torch.Generator().manual_seed(seed)
        self._split = dim // 2 if dim >= _SPLIT_AT else 0
        self._drop_masked = self.scatter.device.type == "cpu" if drop_masked is None else drop_masked
        self._basis: torch.Tensor | None = None  # (d_in, l) Ritz basis of the last solve: the next warm start

    @property
    def dim(self) -> int:
        return self._dim

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``rows`` (N, d_in) where ``mask`` (N,) is true. On an accelerator masked rows are zeroed
        (no host synchronisation, no gather); on the CPU they are dropped, which saves their work. Masked
        rows may hold anything (even NaN): they add nothing and are not checked."""
        rows = rows.to(device=self.scatter.device, dtype=torch.float32)
        keep = None if mask is None else mask.to(device=rows.device, dtype=torch.bool)  # (N,)
        if keep is not None and self._drop_masked:
            rows, keep = rows[keep], None  # (N', d_in): skip padding
        if rows.shape[0] == 0:
            return
        finite = torch.isfinite(rows)  # (N, d_in)
        if keep is not None:
            rows = torch.where(keep[:, None], rows, 0.0)
            finite = finite | ~keep[:, None]
        self._finite &= finite.all()
        count = rows.new_tensor(rows.shape[0], dtype=torch.float64) if keep is None else keep.sum(dtype=torch.float64)
        if self.shift is None:
            self.shift = rows.sum(dim=0, dtype=torch.float64) / count.clamp_min(1.0)  # (d_in,)
        shifted = rows.double() - self.shift  # (N, d_in), exact for rows near the shift
        if keep is not None:
            shifted = torch.where(keep[:, None], shifted, 0.0)  # masked rows add nothing
        self.count += count
        self.shifted_sum += shifted.sum(dim=0)
        self._add_outer(shifted)

    def _add_outer(self, shifted: torch.Tensor) -> None:
        """S += shifted^T shifted, the product in float32 on rows scaled by a power of two (exact)."""
        scale = power_of_two_above(shifted)
        unit = (shifted / scale).float()  # (N, d_in), entries in [-1, 1]: no product overflows float32
        square = scale * scale
        h = self._split
        if not h:
            self.scatter.addcmul_(unit.T @ unit, square)
            return
        left, right = unit[:, :h], unit[:, h:]  # (N, h), (N, d_in - h)
        self.scatter[:h, :h].addcmul_(left.T @ left, square)
        self.scatter[:h, h:].addcmul_(left.T @ right, square)
        self.scatter[h:, h:].addcmul_(right.T @ right, square)

    def rows_seen(self) -> torch.Tensor:
        return self.count

    def rebase(self, shift: torch.Tensor) -> None:
        """Re-express the statistics about a new ``shift`` (d_in,), so that statistics of different row
        sets kept about one shift can be summed. With delta = old shift - new shift,
        ``S' = S + delta m^T + m delta^T + n delta delta^T`` and ``m' = m + n delta``."""
        shift = shift.to(device=self.scatter.device, dtype=torch.float64)
        if self.shift is not None:
            delta = self.shift - shift  # (d_in,)
            n = self.count
            m = self.shifted_sum
            self.scatter += torch.outer(delta, m) + torch.outer(m, delta) + n * torch.outer(delta, delta)
            self.shifted_sum += n * delta
        self.shift = shift.clone()

    def clear(self) -> None:
        """Forget every row (keeping the shift and the warm start), e.g. once they were sent elsewhere."""
        self.scatter.zero_()
        self.shifted_sum.zero_()
        self.count.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that restore these statistics exactly (the solver's warm start and random state
        included), for checkpoints."""
        state = {
            "scatter": self.scatter,
            "shifted_sum": self.shifted_sum,
            "count": self.count,
            "finite": self._finite,
            "generator": self._generator.get_state(),
        }
        if self.shift is not None:
            state["shift"] = self.shift
        if self._basis is not None:
            state["basis"] = self._basis
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors are copied onto the statistics' device)."""
        device = self.scatter.device
        self.scatter.copy_(state["scatter"])
        self.shifted_sum.copy_(state["shifted_sum"])
        self.count.copy_(state["count"])
        self._finite = state["finite"].to(device=device, dtype=torch.bool) if "finite" in state else self._finite
        self._generator.set_state(state["generator"].to("cpu", torch.uint8))
        self.shift = state["shift"].to(device=device, dtype=torch.float64) if "shift" in state else None
        self._basis = state["basis"].to(device) if "basis" in state else None

    def is_finite(self) -> torch.Tensor:
        """Every entry of every kept row was finite (checked on each update, not just the diagonal)."""
        return self._finite & torch.isfinite(self.scatter.diagonal()).all() & torch.isfinite(self.shifted_sum).all()

    def operator(self) -> ScatterOperator:
        """The (d_in, d_in) scatter matrix (centered or not) of all rows seen, as products without forming
        it (see :class:`ScatterOperator`; ``.dense()`` forms it)."""
        return ScatterOperator(self.scatter, self._split, self._correction_factors())

    def _correction_factors(self) -> _LowRank:
        """The scatter matrix minus the accumulated shifted one, as a sum of outer products."""
        m = self.shifted_sum
        if self.shift is None:
            return _LowRank([], [])
        n = self.count.clamp_min(1.0)
        if self.centered:
            return _LowRank([m], [-m / n])
        s = self.shift
        return _LowRank([s, m, s], [m, s, n * s])

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        """The top-``k`` spectrum of the rows seen so far, warm-started from the last solve (or from
        ``previous`` (k', d_in) rows when there was none). Unless ``exact``, only the top ``accurate``
        vectors are iterated to tolerance. Components under the noise floor get zero variance."""
        scatter = self.operator()
        rows = int(self.count.item())
        total = float(scatter.trace())  # sum of the eigenvalues, float64
        # what float32 rounding is relative to: the shifted scatter (the centering subtracts from it)
        reference = max(total, float(self.scatter.diagonal().sum()))
        if not total > 0.0:  # no variance at all (constant or zero rows): nothing to solve
            return dead_spectrum(k, self.dim, rows, self.scatter.device)
        start = self._basis if self._basis is not None else (None if previous is None else previous.T)
        values, vectors, self._basis = top_eigenpairs(
            scatter.scaled(1.0 / total),  # trace 1, float32: the solver never sees huge or tiny numbers
            k,
            start=start,
            rel_tol=1e-5 if exact else 1e-3,
            abs_tol=1e-7 if exact else 1e-6,
            accurate=None if exact else accurate,
            generator=self._generator,
        )
        return spectrum_from(values.double() * total, vectors.T, total, reference, rows, self.centered)


class _LowRank:
    """sum_i outer(left_i, right_i), a few (d,) pairs."""

    def __init__(self, left: list[torch.Tensor], right: list[torch.Tensor]) -> None:
        self.left, self.right = left, right

    def matmul(self, block: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(block)
        for u, v in zip(self.left, self.right, strict=True):
            out += torch.outer(u, v @ block)  # (d, l)
        return out

    def scaled(self, factor: float) -> _LowRank:
        """factor times this sum, in float32."""
        return _LowRank([(u * factor).float() for u in self.left], [v.float() for v in self.right])

    def dense(self) -> torch.Tensor | float:
        return sum((torch.outer(u, v) for u, v in zip(self.left, self.right, strict=True)), 0.0)

    def trace(self) -> torch.Tensor | float:
        return sum(((u * v).sum() for u, v in zip(self.left, self.right, strict=True)), 0.0)


class ScatterOperator:
    """The scatter matrix of :class:`GramStatistics` as an operator: ``C Q`` from the stored blocks
    (the upper triangle only, for wide inputs) plus the low-rank mean correction, so a convergence check
    never forms a (d_in, d_in) matrix."""

    def __init__(self, scatter: torch.Tensor, split: int, correction: _LowRank) -> None:
        self.scatter, self.split, self.correction = scatter, split, correction

    @property
    def dim(self) -> int:
        return self.scatter.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.scatter.dtype

    @property
    def device(self) -> torch.device:
        return self.scatter.device

    def matmul(self, block: torch.Tensor) -> torch.Tensor:
        """C @ block, block: (d_in, l) -> (d_in, l)."""
        h = self.split
        if not h:
            product = self.scatter @ block
        else:
            upper, lower = block[:h], block[h:]  # (h, l), (d_in - h, l)
            corner = self.scatter[:h, h:]  # (h, d_in - h)
            product = torch.cat(
                [self.scatter[:h, :h] @ upper + corner @ lower, corner.T @ upper + self.scatter[h:, h:] @ lower]
            )
        return product + self.correction.matmul(block)

    def scaled(self, factor: float) -> ScatterOperator:
        """``factor * C`` in float32 (a copy of the stored blocks)."""
        return ScatterOperator((self.scatter * factor).float(), self.split, self.correction.scaled(factor))

    def dense(self) -> torch.Tensor:
        full = self.scatter.triu() + self.scatter.triu(1).T if self.split else self.scatter.clone()
        return full + self.correction.dense()

    def trace(self) -> torch.Tensor:
        return self.scatter.diagonal().sum() + self.correction.trace()

"""A mergeable streaming sketch of a layer's inputs, for inputs whose exact d_in x d_in statistics would
cost too much memory or too much compute per row.

The sketch keeps B: (l, d_in), the top l scaled right-singular vectors of the (centered) rows A: (N, d_in)
seen so far, as the incremental SVD does (Brand, 2002; Ross et al., 2008), and folds new rows in the way
Frequent Directions does (Liberty, 2013; Ghashami et al., 2016): rows wait in a buffer, and each fold
stacks the sketch and 2l buffered rows, M: (3l, d_in), takes the eigendecomposition of the (3l, 3l) Gram
matrix ``M M^T = U diag(lambda) U^T`` and keeps ``B = U_l^T M``. A fold is two matrix products and a
small eigh, so a row costs about ``12 l d_in`` FLOPs against the ``1.5-2 d_in^2`` of the exact Gram
update (:mod:`.gram`): at d_in = 4096 and l = 96 about a fifth.

What is guaranteed. Each fold drops a positive semi-definite residual whose norm is its largest dropped
eigenvalue ``lambda_{l+1}``; their sum ``Delta`` (:attr:`SketchStatistics.residual`) is tracked, so

    0 <= A^T A - B^T B <= Delta I:

every variance read from the sketch is a lower bound, within ``Delta`` of the exact one, and by
Davis-Kahan the top-k subspace is off by at most ``sin theta <= Delta / gap_k``. That bound is computed
but loose (each fold adds its own worst case). Frequent Directions' shrinking step would also bound
``Delta`` in advance, by ``||A - A_j||_F^2 / (l - j)``, but on real activations it lowers the accuracy of
the top components: on all-MiniLM-L6-v2 (24 inputs, 10k rows, k = 16, l = 48) the worst subspace overlap
with the exact SVD was 0.72 with FD's shrinking, 0.94 when only the lower half is shrunk (parameterized
FD, Desai et al., 2016), and 0.991 with plain truncation, which is what is used here; ``docs/benchmarks.md``
measures it on every model.

Centering. Each batch is centered on its own mean and the between-batch correction row
``sqrt(n_a n_b / (n_a + n_b)) (mean_a - mean_b)`` is appended (the pairwise update of Chan, Golub and
LeVeque, 1979), so the rows sketched carry exactly the centered scatter of all rows. Merging two sketches
(other processes' rows, :meth:`SketchStatistics.merge`) is the same operation, and the residual bounds
add. The mean, the row count and the total variance are exact (float64), so explained-variance ratios
have an exact denominator.

Masks are handled as the exact path does: on the CPU masked rows are dropped before any work; elsewhere
they are zeroed and counted on the device, with no gather. Unlike the exact update, an update does
synchronise with the host on an accelerator: once per batch (the finiteness check) and once per fold (the
small eigendecomposition).
"""

from __future__ import annotations

import torch

from .spectrum import Spectrum, dead_spectrum, orient, power_of_two_above, spectrum_from

__all__ = ["SketchStatistics", "sketch_width"]

_WIDTH_PER_COMPONENT = 3
_MIN_WIDTH = 16
# buffered rows folded at once, per sketch row: 2l rows cost the same per row as l, in half the folds
_FOLDED_PER_WIDTH = 2


def sketch_width(max_components: int) -> int:
    """l, the rows a sketch keeps for a layer that may take ``max_components`` components: three times as
    many (at least 16), so what each fold drops lies well below the components a rank is given (at l = 2k
    the worst overlap on MiniLM fell from 0.992 to 0.973)."""
    return max(_WIDTH_PER_COMPONENT * max_components, _MIN_WIDTH)


class SketchStatistics:
    """O(l * d_in) memory statistics of the rows fed to one layer, mergeable across processes.

    Args:
        dim: d_in.
        width: l, the rows the sketch keeps (see :func:`sketch_width`); at most ``dim``.
        device: where the sketch lives.
        centered: PCA (subtract the mean) or the uncentered second moment.
        drop_masked: drop masked rows before any work (cheaper; on an accelerator it would synchronise with
            the host) rather than zero them; ``None`` drops them on the CPU only.
    """

    def __init__(
        self,
        dim: int,
        width: int,
        device: torch.device | str,
        centered: bool = True,
        drop_masked: bool | None = None,
    ) -> None:
        self._dim = dim
        self.width = max(1, min(width, dim))
        self.centered = centered
        self.sketch = torch.zeros(0, dim, dtype=torch.float32, device=device)  # (l', d_in), l' <= l
        self._pending: list[torch.Tensor] = []  # (n_i, d_in) float32 rows not folded yet
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)  # (d_in,)
        self.count = torch.zeros((), dtype=torch.float64, device=device)  # N
        self.total = torch.zeros((), dtype=torch.float64, device=device)  # sum of squared (centered) norms
        self.residual = torch.zeros((), dtype=torch.float64, device=device)  # Delta
        self._finite = torch.ones((), dtype=torch.bool, device=device)
        self._drop_masked = self.sketch.device.type == "cpu" if drop_masked is None else drop_masked

    @property
    def dim(self) -> int:
        return self._dim

    # adding rows ---------------------------------------------------------------------------------------
    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``rows`` (N, d_in) where ``mask`` (N,) is true. Masked rows may hold anything (even NaN). A
        batch holding NaN or infinity marks the statistics non-finite (the fit reports it) and adds nothing.
        The rows are centered and folded 2l at a time, so the copies an update makes are O(l d_in)."""
        rows = rows.to(device=self.sketch.device)
        keep = None if mask is None else mask.to(device=rows.device, dtype=torch.bool)  # (N,)
        if keep is not None and self._drop_masked:
            rows, keep = rows[keep], None  # (N', d_in)
        if rows.shape[0] == 0:
            return
        if keep is None:
            count = torch.tensor(float(rows.shape[0]), dtype=torch.float64, device=rows.device)
        else:
            rows = rows.masked_fill(~keep[:, None], 0.0)  # masked rows add nothing
            count = keep.sum(dtype=torch.float64)
        row_sum = rows.sum(dim=0, dtype=torch.float64)  # (d_in,): NaN or infinity anywhere makes it non-finite
        finite = torch.isfinite(row_sum).all()
        self._finite &= finite
        if not bool(finite):
            return
        mean = row_sum / count.clamp_min(1.0) if self.centered else torch.zeros_like(self.mean)  # (d_in,)
        variance = torch.zeros((), dtype=torch.float64, device=rows.device)
        step = _FOLDED_PER_WIDTH * self.width
        for start in range(0, rows.shape[0], step):
            exact = rows[start : start + step].to(torch.float64) - mean  # (<= 2l, d_in): constant rows give zeros
            if keep is not None and self.centered:
                exact.masked_fill_(~keep[start : start + step, None], 0.0)
            flat = exact.view(-1)
            variance += torch.dot(flat, flat)
            self._buffer(exact.float())
        self._absorb(mean, count, variance)

    def merge(self, other: SketchStatistics) -> None:
        """Fold ``other``'s rows in: afterwards this sketch summarizes the union of both row sets (the
        residual bounds add). ``other`` is left as it was."""
        for part in (other.sketch, *other._pending):
            self._buffer(part.to(device=self.sketch.device, dtype=torch.float32))
        self._absorb(other.mean, other.count, other.total.clone(), other.residual)
        self._finite &= other._finite.to(self._finite.device)

    def _absorb(
        self, mean: torch.Tensor, count: torch.Tensor, variance: torch.Tensor, residual: torch.Tensor | None = None
    ) -> None:
        """Account for a row set with ``mean`` (d_in,), ``count`` rows and total (centered) ``variance`` whose
        rows were buffered: when centered, buffer the between-means correction row too."""
        device = self.sketch.device
        mean, count = mean.to(device=device, dtype=torch.float64), count.to(device=device, dtype=torch.float64)
        if self.centered:
            n_all = self.count + count
            weight = (self.count * count / n_all.clamp_min(1.0)).sqrt()
            correction = weight * (self.mean - mean)  # (d_in,)
            self._buffer(correction[None].float())
            variance = variance + correction.pow(2).sum()
            self.mean = self.mean + (mean - self.mean) * (count / n_all.clamp_min(1.0))
        self.count = self.count + count
        self.total = self.total + variance.to(device)
        if residual is not None:
            self.residual = self.residual + residual.to(device)

    def _buffer(self, rows: torch.Tensor) -> None:
        """Append float32 ``rows`` (n, d_in) to the buffer; fold once it holds 2l rows."""
        self._pending.append(rows)
        if sum(part.shape[0] for part in self._pending) >= _FOLDED_PER_WIDTH * self.width:
            self._fold()

    def _fold(self) -> None:
        """Fold the buffer into the sketch, ``2 l`` rows at a time, leaving fewer than that pending."""
        pending = torch.cat(self._pending)  # (P, d_in)
        step = _FOLDED_PER_WIDTH * self.width
        start = 0
        while pending.shape[0] - start >= step:
            self.sketch = self._truncated(torch.cat([self.sketch, pending[start : start + step]]))
            start += step
        rest = pending[start:].clone()  # a copy: a view would keep the whole batch's rows alive
        self._pending = [rest] if rest.shape[0] else []

    def _truncated(self, stacked: torch.Tensor) -> torch.Tensor:
        """The top ``l`` scaled right-singular vectors of ``stacked`` (m, d_in), (l, d_in); the largest
        eigenvalue dropped is added to :attr:`residual`."""
        scale = power_of_two_above(stacked)
        unit = (stacked / scale).float()  # entries in [-1, 1]: the product neither overflows nor underflows
        values, vectors = torch.linalg.eigh((unit @ unit.T).double())  # (m,), (m, m) ascending
        keep = min(self.width, stacked.shape[0])
        if stacked.shape[0] > keep:
            self.residual = self.residual + values[-keep - 1].clamp_min(0.0) * scale * scale
        return vectors[:, -keep:].flip(1).T.float() @ stacked  # (l, d_in): rows U_l^T M, norms sigma_i

    def flush(self) -> None:
        """Fold the buffer into the sketch now, so it holds at most l rows and no buffer (before it is sent to
        another process). Drops something (adds to :attr:`residual`) only when more than l rows are held."""
        if self._pending:
            self.sketch = self._truncated(torch.cat([self.sketch, *self._pending]))
            self._pending = []

    # reading ---------------------------------------------------------------------------------------------
    def rows(self) -> torch.Tensor:
        """The sketch and the buffer: (l' + P, d_in) float32 rows whose scatter is the sketched one."""
        return torch.cat([self.sketch, *self._pending])

    def rows_seen(self) -> torch.Tensor:
        return self.count

    def is_finite(self) -> torch.Tensor:
        return self._finite.clone()

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        """The top-``k`` spectrum of the sketched scatter (the other arguments are unused: the solve is exact
        and small)."""
        k = min(k, self.dim)
        total = float(self.total)
        rows = int(self.count.item())
        stacked = self.rows().double()  # (m, d_in)
        if not total > 0.0 or stacked.shape[0] == 0:
            return dead_spectrum(k, self.dim, rows, self.sketch.device)
        values, vectors = torch.linalg.eigh(stacked @ stacked.T)  # (m,), (m, m) ascending
        held = min(k, stacked.shape[0])
        values, vectors = values.flip(0)[:held].clamp_min(0.0), vectors.flip(1)[:, :held]  # (k',), (m, k')
        directions = (vectors.T @ stacked) / values.sqrt().clamp_min(torch.finfo(torch.float64).tiny)[:, None]
        return _completed(spectrum_from(values, directions, total, total, rows, self.centered), k)

    # checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that restore the sketch exactly (buffer included), for checkpoints."""
        return {
            "sketch": self.sketch,
            "pending": torch.cat([self.sketch[:0], *self._pending]),
            "mean": self.mean,
            "count": self.count,
            "total": self.total,
            "residual": self.residual,
            "finite": self._finite,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (or what the earlier sketch, which folded each whole batch
        with a thin SVD, saved: its rows under ``basis``, an integer count and no residual bound)."""
        device = self.sketch.device
        self.sketch = state["sketch" if "sketch" in state else "basis"].to(device=device, dtype=torch.float32)
        pending = state.get("pending", self.sketch[:0]).to(device=device, dtype=torch.float32)
        self._pending = [pending] if pending.shape[0] else []
        self.mean = state["mean"].to(device=device, dtype=torch.float64)
        self.count = state["count"].to(device=device, dtype=torch.float64)
        self.total = state["total"].to(device=device, dtype=torch.float64)
        self.residual = state.get("residual", torch.zeros(())).to(device=device, dtype=torch.float64)
        self._finite = state["finite"].to(device=device, dtype=torch.bool)

    def clear(self) -> None:
        """Forget every row (e.g. once they were sent to another process); the finiteness flag stays."""
        self.sketch = self.sketch[:0]
        self._pending = []
        self.mean = torch.zeros_like(self.mean)
        self.count = torch.zeros_like(self.count)
        self.total = torch.zeros_like(self.total)
        self.residual = torch.zeros_like(self.residual)


def _completed(spectrum: Spectrum, k: int) -> Spectrum:
    """``spectrum``'s components with variance, completed to ``k`` orthonormal ones with zero variance (the
    sketch's zero rows have no direction, and it may hold fewer than ``k`` rows)."""
    held = int((spectrum.explained_variance > 0).sum().item())
    if held == k == spectrum.components.shape[0]:
        return spectrum
    live = spectrum.components[:held]  # (held, d_in)
    dim, device = live.shape[1], live.device
    completion = torch.cat([live, torch.eye(dim, dtype=torch.float32, device=device)]).T  # (d_in, held + d_in)
    basis = torch.linalg.qr(completion.double())[0].float()  # (d_in, d_in): the first held columns span live
    components = torch.cat([live, orient(basis[:, held:k].T.contiguous())])  # (k, d_in)
    zeros = torch.zeros(k - held, dtype=torch.float32, device=device)
    return Spectrum(
        components=components,
        singular_values=torch.cat([spectrum.singular_values[:held], zeros]),
        explained_variance=torch.cat([spectrum.explained_variance[:held], zeros]),
        explained_variance_ratio=torch.cat([spectrum.explained_variance_ratio[:held], zeros]),
        rows=spectrum.rows,
    )

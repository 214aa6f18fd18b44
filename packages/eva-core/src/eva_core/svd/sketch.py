"""A streaming low-rank sketch of a layer's inputs, for layers whose d_in x d_in statistics would not fit.

Keeps ``B = diag(sigma) V^T``: (l, d_in), the top-l scaled right-singular vectors of the centered rows
seen so far (l = 2k, k the components wanted), and folds each batch in with one thin SVD of
``[B; X_batch - mean_batch; mean correction]``, as incremental PCA does (Ross et al., 2008). Unlike
peft's variant the SVD is exact (not a randomized low-rank one) and the sketch keeps twice the wanted
width, so truncation error stays well below the wanted components. The total variance is tracked
exactly, so explained-variance ratios are exact too.
"""

from __future__ import annotations

import torch

from .spectrum import Spectrum, orient

__all__ = ["SketchStatistics"]


class SketchStatistics:
    """O(l * d_in) memory statistics of the rows fed to one layer.

    Args:
        dim: d_in.
        width: l, the number of directions kept (at least twice the components that will be asked for).
        device: where the sketch lives.
        centered: PCA (subtract the mean) or the uncentered second moment.
    """

    def __init__(self, dim: int, width: int, device: torch.device | str, centered: bool = True) -> None:
        self._dim = dim
        self.width = min(width, dim)
        self.centered = centered
        self.basis = torch.zeros(0, dim, dtype=torch.float32, device=device)  # (l', d_in)
        self.mean = torch.zeros(dim, dtype=torch.float32, device=device)  # (d_in,)
        self.count = 0
        self.total = torch.zeros((), dtype=torch.float64, device=device)  # sum of squared (centered) norms
        self._finite = torch.ones((), dtype=torch.bool, device=device)

    @property
    def dim(self) -> int:
        return self._dim

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``rows`` (N, d_in) where ``mask`` (N,) is true (selecting rows synchronises on CUDA)."""
        rows = rows.to(device=self.basis.device, dtype=torch.float32)
        if mask is not None:
            rows = rows[mask.to(device=rows.device, dtype=torch.bool)]  # (N', d_in)
        n_new = rows.shape[0]
        if n_new == 0:
            return
        self._finite &= torch.isfinite(rows).all()
        n_old, n_all = self.count, self.count + n_new
        if not self.centered:
            stacked = torch.cat([self.basis, rows])
            self.total += rows.double().pow(2).sum()
        else:
            batch_mean = rows.mean(dim=0)  # (d_in,)
            centered = rows - batch_mean  # (N', d_in)
            correction = (n_old * n_new / n_all) ** 0.5 * (self.mean - batch_mean)  # (d_in,)
            stacked = torch.cat([self.basis, centered, correction[None]])  # (l' + N' + 1, d_in)
            self.total += centered.double().pow(2).sum() + correction.double().pow(2).sum()
            self.mean = self.mean + (batch_mean - self.mean) * (n_new / n_all)
        _, sigma, vh = torch.linalg.svd(stacked, full_matrices=False)
        keep = min(self.width, sigma.shape[0])
        self.basis = sigma[:keep, None] * vh[:keep]  # (l, d_in)
        self.count = n_all

    def rows_seen(self) -> torch.Tensor:
        return torch.tensor(float(self.count), dtype=torch.float64)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that restore the sketch exactly, for checkpoints."""
        return {
            "basis": self.basis,
            "mean": self.mean,
            "count": torch.tensor(self.count, dtype=torch.int64),
            "total": self.total,
            "finite": self._finite,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        device = self.mean.device
        self.basis = state["basis"].to(device=device, dtype=torch.float32)
        self.mean = state["mean"].to(device=device, dtype=torch.float32)
        self.count = int(state["count"].item())
        self.total = state["total"].to(device=device, dtype=torch.float64)
        self._finite = state["finite"].to(device=device, dtype=torch.bool)

    def is_finite(self) -> torch.Tensor:
        return self._finite.clone()

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        """The top-``k`` spectrum held by the sketch (it needs no solver: the other arguments are unused)."""
        norms = self.basis.norm(dim=1)  # (l',) = singular values, descending
        k = min(k, self.basis.shape[0])
        sigma = norms[:k]
        directions = self.basis[:k] / sigma.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
        values = sigma.pow(2)
        denominator = max(self.count - 1, 1) if self.centered else max(self.count, 1)
        total = self.total.to(torch.float32).clamp_min(torch.finfo(torch.float32).tiny)
        return Spectrum(
            components=orient(directions.contiguous()),
            singular_values=sigma,
            explained_variance=values / denominator,
            explained_variance_ratio=values / total,
            rows=self.count,
        )

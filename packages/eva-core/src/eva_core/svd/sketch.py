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

from .spectrum import Spectrum, dead_spectrum, orient, spectrum_from

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
        finite = torch.isfinite(rows)  # (N', d_in)
        self._finite &= finite.all()
        rows = torch.where(finite, rows, 0.0)  # the fit reports the NaN/inf; the SVD below must not fail on it
        n_old, n_all = self.count, self.count + n_new
        if not self.centered:
            stacked = torch.cat([self.basis, rows])
            self.total += rows.double().pow(2).sum()
        else:
            batch_mean = rows.sum(dim=0, dtype=torch.float64) / n_new  # (d_in,)
            centered = rows.double() - batch_mean  # (N', d_in): float64, so constant rows give exact zeros
            correction = (n_old * n_new / n_all) ** 0.5 * (self.mean.double() - batch_mean)  # (d_in,)
            self.total += centered.pow(2).sum() + correction.pow(2).sum()
            stacked = torch.cat([self.basis, centered.float(), correction[None].float()])  # (l' + N' + 1, d_in)
            self.mean = (self.mean.double() + (batch_mean - self.mean.double()) * (n_new / n_all)).float()
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
        k = min(k, self.dim)
        total = float(self.total)
        if not total > 0.0 or self.basis.shape[0] == 0:
            return dead_spectrum(k, self.dim, self.count, self.basis.device)
        basis = self.basis[:k]  # (k', d_in), k' <= k
        sigma = basis.double().norm(dim=1)  # (k',) singular values, descending
        directions = (basis.double() / sigma.clamp_min(torch.finfo(torch.float64).tiny)[:, None]).float()
        return _completed(spectrum_from(sigma.pow(2), directions, total, total, self.count, self.centered), k)


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

"""What a layer's input statistics report, and the protocol every statistics engine follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["InputStatistics", "Spectrum", "dead_spectrum", "noise_floor", "power_of_two_above", "spectrum_from"]


@dataclass(frozen=True)
class Spectrum:
    """The top-k principal directions of the rows a layer has seen.

    Attributes:
        components: (k, d_in) orthonormal rows, ordered by decreasing singular value, sign fixed so the
            largest-magnitude entry of each row is positive.
        singular_values: (k,) singular values of the (centered) row matrix X: (N, d_in).
        explained_variance: (k,) ``singular_values**2 / (N - 1)`` (``/ N`` when uncentered).
        explained_variance_ratio: (k,) share of the total variance (trace) each component explains.

    A component whose variance is below float32 noise (:func:`noise_floor`) reports zero in all three
    (its direction is arbitrary); such components get no rank.
        rows: N, the number of rows seen.
    """

    components: torch.Tensor
    singular_values: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    rows: int


class InputStatistics(Protocol):
    """A streaming summary of the rows X: (N, d_in) fed to one layer."""

    @property
    def dim(self) -> int:
        """d_in, the row width."""

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``rows`` (N, d_in), keeping those where ``mask`` (N,) is true; no host synchronisation."""

    def rows_seen(self) -> torch.Tensor:
        """A 0-d tensor on the statistics' device: the number of rows added so far."""

    def is_finite(self) -> torch.Tensor:
        """A 0-d bool tensor: false once a NaN or infinity reached the statistics."""

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        """The top-``k`` spectrum; ``previous`` (k', d_in) warm-starts the solver; ``exact`` asks for a
        tight tolerance (the final answer) rather than a convergence check, where only the top
        ``accurate`` vectors need be converged (the rest are used for their eigenvalues)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that restore the statistics exactly (for checkpoints)."""

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""


def orient(components: torch.Tensor) -> torch.Tensor:
    """Flip the sign of each row of ``components`` (k, d_in) so its largest-magnitude entry is positive."""
    if components.numel() == 0:
        return components
    idx = components.abs().argmax(dim=1, keepdim=True)  # (k, 1)
    signs = torch.sign(components.gather(1, idx))  # (k, 1)
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return components * signs


def power_of_two_above(values: torch.Tensor) -> torch.Tensor:
    """2^e, the smallest power of two above every magnitude in ``values`` (1 when all are 0), as a 0-d float64
    tensor: dividing by it is exact and brings every entry into [-1, 1], so a float32 product of the quotients
    neither overflows nor underflows (the exact update and the sketch's folds scale their rows by it)."""
    low, high = torch.aminmax(values)
    _, exponent = torch.frexp(torch.maximum(high, -low))
    return torch.ldexp(torch.ones((), dtype=torch.float64, device=values.device), exponent)


def noise_floor() -> float:
    """The variance, relative to the magnitude the statistics were computed from, at or below which a
    component is float32 rounding noise rather than signal: ``32 * eps(float32)`` (3.8e-6). Directions with
    no variance at all come out of float32 products and eigensolvers at up to ~2 eps times that magnitude
    (measured for d_in from 16 to 1100, rank-deficient and offset rows), so the floor keeps a 15x margin.
    Whitening such a direction would blow noise up by 1/sqrt(noise); it is reported with no variance."""
    return 32.0 * torch.finfo(torch.float32).eps


def spectrum_from(
    values: torch.Tensor, components: torch.Tensor, total: float, reference: float, rows: int, centered: bool
) -> Spectrum:
    """A :class:`Spectrum` from eigenvalues ``values`` (k,) (of the scatter matrix, any float dtype),
    ``components`` (k, d_in), the trace ``total`` and the ``reference`` magnitude rounding is relative to;
    values at or under ``noise_floor() * reference`` become zero."""
    values = values.double().clamp_min(0.0)
    values = torch.where(values > noise_floor() * reference, values, 0.0)
    denominator = max(rows - 1, 1) if centered else max(rows, 1)
    ratio = values / total if total > 0 else torch.zeros_like(values)
    return Spectrum(
        components=orient(components.float().contiguous()),
        singular_values=values.sqrt().float(),
        explained_variance=(values / denominator).float(),
        explained_variance_ratio=ratio.float(),
        rows=rows,
    )


def dead_spectrum(k: int, dim: int, rows: int, device: torch.device) -> Spectrum:
    """The spectrum of rows without variance: ``k`` orthonormal (coordinate) directions, all with zero."""
    zeros = torch.zeros(k, dtype=torch.float32, device=device)
    components = torch.eye(k, dim, dtype=torch.float32, device=device)
    return Spectrum(components, zeros, zeros, zeros, rows)

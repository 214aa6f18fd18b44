"""Top eigenpairs of a symmetric positive semi-definite matrix, warm-started.

Block subspace iteration with Rayleigh-Ritz: with Q: (d, l) orthonormal, each iteration forms
Z = C Q, the Ritz pairs (theta, W) of T = Q^T Z, and stops once every wanted Ritz pair has residual
``||Z w - theta q w|| <= rel_tol * theta + abs_tol * theta_1``. A warm start from the previous step's components makes a
convergence check cost one or two (d, d) x (d, l) products instead of an O(d^3) eigendecomposition.
When the iteration stalls (near-flat spectra) it falls back to ``torch.linalg.eigh``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

__all__ = ["DenseOperator", "SymmetricOperator", "top_eigenpairs"]

_log = logging.getLogger(__name__)

_DENSE_BELOW = 256  # eigh of a matrix this small is cheaper than any iteration


class SymmetricOperator(Protocol):
    """A symmetric positive semi-definite C: (d, d) known through its products."""

    @property
    def dim(self) -> int:
        """d."""

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def matmul(self, block: torch.Tensor) -> torch.Tensor:
        """C @ block for block: (d, l)."""

    def dense(self) -> torch.Tensor:
        """C itself, (d, d): only for the dense fallback."""


class DenseOperator:
    """A :class:`SymmetricOperator` over an explicit matrix."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def matmul(self, block: torch.Tensor) -> torch.Tensor:
        return self.matrix @ block

    def dense(self) -> torch.Tensor:
        return self.matrix


def top_eigenpairs(
    matrix: torch.Tensor | SymmetricOperator,
    k: int,
    start: torch.Tensor | None = None,
    rel_tol: float = 1e-5,
    abs_tol: float = 1e-7,
    accurate: int | None = None,
    max_iter: int = 60,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The ``k`` largest eigenvalues and their eigenvectors of ``matrix``.

    Args:
        matrix: C: (d, d) symmetric positive semi-definite, float32 or float64, as a tensor or as an
            operator that multiplies by it (so C need never be formed).
        k: how many pairs, ``1 <= k <= d``.
        start: (d, l') columns spanning a guess of the subspace (e.g. the basis returned last time).
        rel_tol: residual tolerance of each pair relative to its own eigenvalue.
        abs_tol: residual tolerance relative to the largest eigenvalue (the float noise floor).
        accurate: only the top ``accurate`` pairs must meet the tolerance (default all ``k``); the others
            are Rayleigh-Ritz estimates, whose eigenvalues converge twice as fast as their vectors.
        max_iter: iterations before falling back to the dense solver.
        generator: random source for the columns the start does not provide.

    Returns:
        values: (k,) descending; vectors: (d, k) orthonormal columns; basis: (d, l) the Ritz basis to
        warm-start the next call with (None when the dense solver answered).
    """
    operator = DenseOperator(matrix) if isinstance(matrix, torch.Tensor) else matrix
    d = operator.dim
    if k > d:
        raise ValueError(f"k={k} exceeds the matrix size d={d}")
    oversample = max(8, k)
    width = min(d, k + oversample)
    if d <= _DENSE_BELOW or width >= d // 2:
        return (*_dense(operator.dense(), k), None)
    checked = k if accurate is None else max(1, min(accurate, k))
    basis = _start_basis(operator, width, start, generator)  # (d, l)
    for _ in range(max_iter):
        image = operator.matmul(basis)  # (d, l)
        ritz_values, ritz_vectors = torch.linalg.eigh(basis.T @ image)  # (l,), (l, l) ascending
        ritz_values, ritz_vectors = ritz_values.flip(0), ritz_vectors.flip(1)
        rotated_image = image @ ritz_vectors  # (d, l)
        vectors = basis @ ritz_vectors  # (d, l)
        residual = rotated_image[:, :checked] - vectors[:, :checked] * ritz_values[:checked]  # (d, c)
        allowed = rel_tol * ritz_values[:checked].clamp_min(0) + abs_tol * ritz_values[0].clamp_min(0)  # (c,)
        if bool((residual.norm(dim=0) <= allowed).all().item()):
            return ritz_values[:k], vectors[:, :k], vectors
        basis, _ = torch.linalg.qr(rotated_image)
    _log.debug("subspace iteration did not converge in %d iterations (d=%d, k=%d); using eigh", max_iter, d, k)
    return (*_dense(operator.dense(), k), None)


def _start_basis(
    operator: SymmetricOperator, width: int, start: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """(d, l) orthonormal: the columns of ``start`` first, random columns after."""
    basis = torch.empty(operator.dim, width, dtype=operator.dtype, device=operator.device)
    filled = 0
    if start is not None and start.numel():
        guess = start[:, :width].to(device=operator.device, dtype=operator.dtype)  # (d, l')
        filled = guess.shape[1]
        basis[:, :filled] = guess
    if filled < width:
        noise = torch.randn(operator.dim, width - filled, generator=generator, dtype=torch.float32)
        basis[:, filled:] = noise.to(device=operator.device, dtype=operator.dtype)
    return torch.linalg.qr(basis)[0]


def _dense(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(matrix)  # ascending
    return values.flip(0)[:k], vectors.flip(1)[:, :k]

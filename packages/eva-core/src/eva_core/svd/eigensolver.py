"""Top eigenpairs of a symmetric positive semi-definite matrix, warm-started.

Block subspace iteration with Rayleigh-Ritz: with Q: (d, l) orthonormal, each iteration forms
Z = C Q, the Ritz pairs (theta, W) of T = Q^T Z, and stops once every wanted Ritz pair has residual
``||Z w - theta q w|| <= rel_tol * theta + abs_tol * theta_1``. A warm start from the previous step's components makes a
convergence check cost one or two (d, d) x (d, l) products instead of an O(d^3) eigendecomposition.
When the iteration stalls (near-flat spectra) it falls back to ``torch.linalg.eigh``.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["top_eigenpairs"]

_log = logging.getLogger(__name__)

_DENSE_BELOW = 256  # eigh of a matrix this small is cheaper than any iteration


def top_eigenpairs(
    matrix: torch.Tensor,
    k: int,
    start: torch.Tensor | None = None,
    rel_tol: float = 1e-5,
    abs_tol: float = 1e-7,
    max_iter: int = 60,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The ``k`` largest eigenvalues and their eigenvectors of ``matrix``.

    Args:
        matrix: C: (d, d) symmetric positive semi-definite, float32 or float64.
        k: how many pairs, ``1 <= k <= d``.
        start: (d, l') columns spanning a guess of the subspace (e.g. the basis returned last time).
        rel_tol: residual tolerance of each pair relative to its own eigenvalue.
        abs_tol: residual tolerance relative to the largest eigenvalue (the float noise floor).
        max_iter: iterations before falling back to the dense solver.
        generator: random source for the columns the start does not provide.

    Returns:
        values: (k,) descending; vectors: (d, k) orthonormal columns; basis: (d, l) the Ritz basis to
        warm-start the next call with (None when the dense solver answered).
    """
    d = matrix.shape[0]
    if k > d:
        raise ValueError(f"k={k} exceeds the matrix size d={d}")
    oversample = max(8, k)
    width = min(d, k + oversample)
    if d <= _DENSE_BELOW or width >= d // 2:
        return (*_dense(matrix, k), None)
    basis = torch.empty(d, width, dtype=matrix.dtype, device=matrix.device)
    filled = 0
    if start is not None and start.numel():
        guess = start[:, :width].to(matrix.dtype)  # (d, l')
        filled = guess.shape[1]
        basis[:, :filled] = guess
    if filled < width:
        noise = torch.randn(d, width - filled, generator=generator, dtype=torch.float32, device="cpu")
        basis[:, filled:] = noise.to(device=matrix.device, dtype=matrix.dtype)
    basis, _ = torch.linalg.qr(basis)  # (d, l)
    for _ in range(max_iter):
        image = matrix @ basis  # (d, l)
        ritz_values, ritz_vectors = torch.linalg.eigh(basis.T @ image)  # (l,), (l, l) ascending
        ritz_values, ritz_vectors = ritz_values.flip(0), ritz_vectors.flip(1)
        rotated_image = image @ ritz_vectors  # (d, l)
        vectors = basis @ ritz_vectors  # (d, l)
        residual = rotated_image[:, :k] - vectors[:, :k] * ritz_values[:k]  # (d, k)
        allowed = rel_tol * ritz_values[:k].clamp_min(0) + abs_tol * ritz_values[0].clamp_min(0)  # (k,)
        if bool((residual.norm(dim=0) <= allowed).all().item()):
            return ritz_values[:k], vectors[:, :k], vectors
        basis, _ = torch.linalg.qr(rotated_image)
    _log.debug("subspace iteration did not converge in %d iterations (d=%d, k=%d); using eigh", max_iter, d, k)
    return (*_dense(matrix, k), None)


def _dense(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(matrix)  # ascending
    return values.flip(0)[:k], vectors.flip(1)[:, :k]

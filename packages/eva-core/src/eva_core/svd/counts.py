"""Exact statistics of an embedding's inputs: token counts, never a (V, V) matrix.

An ``nn.Embedding`` over V tokens reads one-hot rows e_t (V wide), so the statistics of N rows are the
token counts c: (V,) with n = sum(c):

    uncentered:  X^T X             = diag(c)
    centered:    X^T X - n mu mu^T = diag(c) - c c^T / n          (mu = c / n)

Both are solved exactly, in O(V + k * G) work for the top k pairs (G distinct non-zero counts):

* ``diag(c)``: the eigenvalues are the counts, the eigenvectors the unit vectors e_t (most frequent first).
* ``diag(c) - z z^T`` with z = c / sqrt(n), a rank-one downdate of a diagonal (Golub 1973; Gu and
  Eisenstat 1994 for the accuracy). Tokens of equal count d form a group; within a group of m tokens the
  m - 1 directions orthogonal to z keep eigenvalue d (an orthonormal Helmert basis of the group). Each
  group then contributes one root of the secular equation ``1 = sum_g m_g d_g^2 / (n (d_g - lambda))``,
  which lies strictly between the group's count and the next smaller one (the smallest root is 0: the
  all-ones direction over the seen tokens), with eigenvector (c_t / (c_t - lambda))_t. Since
  ``sum_g m_g d_g = n``, ``d^2 / (d - lambda) = d + lambda d / (d - lambda)`` turns it, for lambda > 0, into

      h(lambda) = sum_g m_g d_g / (d_g - lambda) = 0,

  free of the cancellation against 1 that loses digits when one token dominates. Each root is found by
  bisection of h in float64 about its nearer pole (so every ``d - lambda`` keeps full relative precision,
  which keeps the vectors orthogonal to working precision, as in Gu and Eisenstat).

Unseen tokens (count 0) have eigenvalue 0 and their unit vectors.
"""

from __future__ import annotations

import math

import torch

from .spectrum import Spectrum, orient

__all__ = ["CountStatistics", "count_eigenpairs"]

_BISECTIONS = 2200  # float64 bisection always stalls before this (it halves towards a representable float)


class CountStatistics:
    """Token counts of the one-hot rows fed to an embedding of ``dim`` = V tokens, in O(V) memory.

    ``update`` takes the rows as a sparse (N, V) one-hot tensor (see
    :func:`eva_core.capture.embedding_rows`): one entry per row, at (i, token id).

    Args:
        dim: V, the embedding's ``num_embeddings``.
        device: where the counts live (the layer's device).
        centered: PCA (subtract the mean) or the uncentered second moment.
    """

    def __init__(self, dim: int, device: torch.device | str, centered: bool = True) -> None:
        self._dim = dim
        self.centered = centered
        self.counts = torch.zeros(dim, dtype=torch.float64, device=device)  # (V,)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    @property
    def dim(self) -> int:
        return self._dim

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Count the tokens of the one-hot ``rows`` (N, V) (sparse) where ``mask`` (N,) is true."""
        row, token = token_indices(rows)  # (N,), (N,)
        weights = torch.ones(row.shape[0], dtype=torch.float64, device=self.counts.device)  # (N,)
        if mask is not None:
            weights = mask.to(device=self.counts.device, dtype=torch.float64)[row.to(self.counts.device)]
        self.counts.index_add_(0, token.to(self.counts.device), weights)
        self.count += weights.sum()

    def add(self, counts: torch.Tensor) -> None:
        """Add token counts (V,) counted elsewhere (another process's rows)."""
        counts = counts.to(device=self.counts.device, dtype=torch.float64)
        self.counts += counts
        self.count += counts.sum()

    def clear(self) -> None:
        """Forget every row."""
        self.counts.zero_()
        self.count.zero_()

    def rows_seen(self) -> torch.Tensor:
        return self.count

    def is_finite(self) -> torch.Tensor:
        return torch.isfinite(self.count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that restore these statistics exactly, for checkpoints."""
        return {"counts": self.counts, "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.counts.copy_(state["counts"])
        self.count.copy_(state["count"])

    def top(
        self, k: int, previous: torch.Tensor | None = None, exact: bool = False, accurate: int | None = None
    ) -> Spectrum:
        """The exact top-``k`` spectrum of the rows seen (closed form: the other arguments are unused)."""
        counts = self.counts.to("cpu")
        values, vectors = count_eigenpairs(counts, k, self.centered)  # (k,), (k, V) float64
        total = float(counts.sum())
        rows = round(total)
        if self.centered and total > 0:
            total = float((counts * (total - counts)).sum()) / total  # trace sum c (n - c) / n: no cancellation
        denominator = max(rows - 1, 1) if self.centered else max(rows, 1)
        device = self.counts.device
        values = values.clamp_min(0.0)
        return Spectrum(
            components=orient(vectors.float()).to(device),
            singular_values=values.sqrt().float().to(device),
            explained_variance=(values / denominator).float().to(device),
            explained_variance_ratio=(values / max(total, torch.finfo(torch.float32).tiny)).float().to(device),
            rows=rows,
        )


def token_indices(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row index (N,), token id (N,)) of the entries of sparse one-hot ``rows`` (N, V).

    Raises:
        TypeError: ``rows`` is not a sparse COO tensor (token counts need token ids, not dense rows).
    """
    if rows.layout != torch.sparse_coo:
        raise TypeError(
            f"token counts need sparse one-hot rows (N, V), got a {rows.layout} tensor of shape {tuple(rows.shape)}"
        )
    indices = rows._indices()  # (2, N): coalesced or not, one entry per row
    return indices[0], indices[1]


def count_eigenpairs(counts: torch.Tensor, k: int, centered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``min(k, V)`` eigenpairs of ``diag(c)`` or ``diag(c) - c c^T / sum(c)``.

    Args:
        counts: c, (V,) non-negative.
        k: pairs wanted.
        centered: the centered scatter (the downdate) rather than ``diag(c)``.

    Returns:
        eigenvalues (k,) descending and orthonormal eigenvectors (k, V), float64. Equal eigenvalues (tokens
        of equal count) take a fixed basis: unit vectors, or Helmert vectors, by increasing token id.
    """
    counts = counts.to(dtype=torch.float64)
    dim = counts.shape[0]
    k = min(k, dim)
    order = torch.sort(counts, descending=True, stable=True).indices  # (V,) by count, then token id
    if not centered or float(counts.sum()) <= 0:
        chosen = order[:k]
        return counts[chosen], _units(chosen, dim)
    return _downdate_pairs(counts, order, k)


def _units(tokens: torch.Tensor, dim: int) -> torch.Tensor:
    vectors = torch.zeros(tokens.shape[0], dim, dtype=torch.float64)  # (k, V)
    vectors[torch.arange(tokens.shape[0]), tokens] = 1.0
    return vectors


def _downdate_pairs(counts: torch.Tensor, order: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenpairs of ``diag(c) - c c^T / n`` in the order the module docstring derives: per group
    (descending count) its m - 1 Helmert pairs, then its secular root; then the unseen tokens."""
    dim = counts.shape[0]
    seen = int((counts > 0).sum())
    levels, sizes = torch.unique_consecutive(counts[order[:seen]], return_counts=True)  # (G,) descending
    weights = sizes * levels  # (G,) m_g d_g
    values: list[float] = []
    vectors: list[torch.Tensor] = []
    start = 0
    for g, (level, size) in enumerate(zip(levels.tolist(), sizes.tolist(), strict=True)):
        group = torch.sort(order[start : start + size]).values  # the group's tokens by id
        start += size
        for i in range(1, min(size, k - len(values) + 1)):
            values.append(level)
            vectors.append(_helmert(group, i, dim))
        if len(values) >= k:
            break
        if g == len(levels) - 1:  # the smallest root is 0: the all-ones direction of the seen tokens
            values.append(0.0)
            ones = torch.zeros(dim, dtype=torch.float64)  # (V,)
            ones[order[:seen]] = 1.0 / math.sqrt(seen)
            vectors.append(ones)
        else:
            root, vector = _secular_pair(levels, weights, g)
            values.append(root)
            vectors.append(_spread(vector, order[:seen], sizes, dim))
        if len(values) >= k:
            break
    unseen = order[seen : seen + k - len(values)]
    values.extend([0.0] * unseen.shape[0])
    stacked = torch.cat([torch.stack(vectors)] + ([_units(unseen, dim)] if unseen.numel() else []))  # (k, V)
    return torch.tensor(values, dtype=torch.float64), stacked


def _helmert(group: torch.Tensor, i: int, dim: int) -> torch.Tensor:
    """The i-th Helmert vector over ``group`` (m,) token ids: (1, ..., 1, -i, 0, ...) / sqrt(i (i + 1))."""
    vector = torch.zeros(dim, dtype=torch.float64)  # (V,)
    vector[group[:i]] = 1.0
    vector[group[i]] = -float(i)
    return vector / math.sqrt(i * (i + 1))


def _secular_pair(levels: torch.Tensor, weights: torch.Tensor, g: int) -> tuple[float, torch.Tensor]:
    """The root of ``h`` between ``levels[g + 1]`` and ``levels[g]`` and its eigenvector's value per group
    (G,) (unnormalised: ``d_h / (d_h - lambda)``)."""
    upper, lower = float(levels[g]), float(levels[g + 1])
    middle = 0.5 * (upper + lower)
    near_upper = _secular(levels - middle, weights, 0.0) < 0  # h increases: the root lies above the middle
    origin = upper if near_upper else lower
    gaps = levels - origin  # (G,) d_h - origin, exact for integer counts
    low, high = (middle - upper, 0.0) if near_upper else (0.0, middle - lower)  # tau = lambda - origin
    for _ in range(_BISECTIONS):
        tau = 0.5 * (low + high)
        if tau in (low, high):
            break
        if _secular(gaps, weights, tau) < 0:
            low = tau
        else:
            high = tau
    tau = 0.5 * (low + high)
    return origin + tau, levels / (gaps - tau)


def _secular(gaps: torch.Tensor, weights: torch.Tensor, tau: float) -> float:
    """h(origin + tau) = sum_g m_g d_g / (d_g - origin - tau); ``gaps`` (G,) = d_g - origin."""
    return float((weights / (gaps - tau)).sum())


def _spread(per_group: torch.Tensor, seen: torch.Tensor, sizes: torch.Tensor, dim: int) -> torch.Tensor:
    """A unit (V,) vector holding ``per_group[g]`` (G,) at each seen token of group g, 0 elsewhere."""
    norm = torch.sqrt((sizes * per_group * per_group).sum())
    vector = torch.zeros(dim, dtype=torch.float64)  # (V,)
    vector[seen] = torch.repeat_interleave(per_group / norm, sizes)  # ``seen`` runs group by group
    return vector

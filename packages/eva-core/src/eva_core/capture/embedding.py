"""Turning an embedding's input (token ids) into its one-hot rows, kept sparse."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..contract import RowsFn
from .rows import token_rows

__all__ = ["embedding_rows", "embedding_rows_for"]


def embedding_rows_for(module: nn.Embedding) -> RowsFn:
    """The rows function of ``module``: its token ids as one-hot rows ``num_embeddings`` wide.

    One function object per layer, so two embeddings fed the same ids are never grouped (their widths
    may differ; counting tokens twice costs nothing)."""
    return functools.partial(embedding_rows, num_embeddings=module.num_embeddings)


def embedding_rows(
    layer_input: torch.Tensor, row_mask: torch.Tensor | None, num_embeddings: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of an embedding: each token id t is the one-hot row e_t, as a sparse COO tensor (one entry per
    row, never a dense (N, V) matrix), which :class:`eva_core.svd.CountStatistics` reads.

    Args:
        layer_input: (B, T) token ids, or any (...) integer tensor.
        row_mask: (B, T) bool matching the leading dimensions, or None (aligned as for a linear layer,
            :func:`eva_core.capture.token_rows`).
        num_embeddings: V.

    Returns:
        rows (N, V) sparse with N = B*T, and the mask flattened to (N,) (or None).
    """
    ids = layer_input.reshape(-1).long()  # (N,)
    _, mask = token_rows(layer_input[..., None], row_mask)  # the same mask alignment as (B, T, 1) rows
    positions = torch.arange(ids.shape[0], device=ids.device)  # (N,)
    rows = torch.sparse_coo_tensor(
        torch.stack([positions, ids]),  # (2, N): sorted by row, one entry each, hence coalesced
        torch.ones(ids.shape[0], device=ids.device),
        (ids.shape[0], num_embeddings),
        is_coalesced=True,
        check_invariants=False,  # ids out of range fail in the count (index_add_) and in the embedding itself
    )
    return rows, mask

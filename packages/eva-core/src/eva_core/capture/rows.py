"""Turning a layer's input into SVD rows."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..errors import warn

__all__ = ["embedding_rows", "embedding_rows_for", "input_width", "token_rows"]


def token_rows(layer_input: torch.Tensor, row_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of a linear layer: every position of the leading dimensions is one row.

    Args:
        layer_input: (B, T, d_in), (B, d_in) or any (..., d_in).
        row_mask: (B, T) bool matching the leading dimensions, or None.

    Returns:
        rows (N, d_in) with N = B*T, and the mask flattened to (N,) (or None).
    """
    dim = layer_input.shape[-1]
    rows = layer_input.reshape(-1, dim)  # (N, d_in)
    if row_mask is None:
        return rows, None
    if tuple(row_mask.shape) == tuple(layer_input.shape[:-1]):
        return rows, row_mask.reshape(-1)  # (N,)
    if layer_input.dim() == 2 and layer_input.shape[0] == row_mask.shape[0]:
        return rows, None  # one row per example (a pooler, a head): nothing to mask
    warn(
        f"a layer input with {layer_input.dim() - 1} leading dimension(s) does not line up with the batch's "
        f"{row_mask.dim()}-d row mask; all its rows are used. Give this layer a rows function in a plugin "
        "(eva_layer_rows) or target only layers that see the token sequence."
    )
    return rows, None


def input_width(module: nn.Module) -> int:
    """d_in of a layer that never ran: ``in_features`` of a linear, ``C_in / groups * prod(kernel)`` of a
    conv (the width of its unfolded patches), ``nx`` of transformers' ``Conv1D``, ``num_embeddings`` of an
    embedding (its one-hot rows); 0 when unknown."""
    if isinstance(module, nn.Embedding):
        return module.num_embeddings
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels // module.groups * math.prod(module.kernel_size)
    return int(getattr(module, "in_features", None) or getattr(module, "nx", None) or 0)


def embedding_rows_for(module: nn.Embedding) -> functools.partial[tuple[torch.Tensor, torch.Tensor | None]]:
    """The rows function of an embedding: its token ids as one-hot rows ``num_embeddings`` wide.

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
        row_mask: (B, T) bool matching the leading dimensions, or None (aligned as for a linear layer).
        num_embeddings: V.

    Returns:
        rows (N, V) sparse with N = B*T, and the mask flattened to (N,) (or None).
    """
    ids = layer_input.reshape(-1).long()  # (N,)
    _, mask = token_rows(layer_input[..., None], row_mask)  # the mask aligned as for (B, T, 1) rows
    positions = torch.arange(ids.shape[0], device=ids.device)  # (N,)
    rows = torch.sparse_coo_tensor(
        torch.stack([positions, ids]),  # (2, N): sorted by row, one entry each, hence coalesced
        torch.ones(ids.shape[0], device=ids.device),
        (ids.shape[0], num_embeddings),
        is_coalesced=True,
        check_invariants=False,  # ids out of range fail in the count (index_add_) and in the embedding itself
    )
    return rows, mask

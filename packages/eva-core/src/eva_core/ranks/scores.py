"""The per-component score that ranks components across layers (``EvaConfig.redistribution``)."""

from __future__ import annotations

import torch

__all__ = ["component_scores"]


def component_scores(
    explained_variance: torch.Tensor, explained_variance_ratio: torch.Tensor, metric: str
) -> torch.Tensor:
    """(k,) scores, descending within a layer.

    ``explained_variance_ratio`` (the default) compares layers by the share of their own input variance a
    component explains; ``explained_variance`` by absolute variance; ``uniform`` scores the i-th
    component of every layer equally, so the budget goes round-robin (every layer gets ``rank``).
    """
    if metric == "explained_variance":
        return explained_variance
    if metric == "uniform":
        return -torch.arange(explained_variance.shape[0], dtype=torch.float32)
    return explained_variance_ratio

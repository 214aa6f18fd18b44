"""The global, capped, deterministic rank allocation of EVA.

Every layer l offers its candidate components with scores ``scores[l]`` (descending, at most its cap
long). All candidates of all layers are sorted by score; the first ``budget`` are handed out, and a
layer's rank is the number of its candidates among them. Ties go to the layer listed first, then to
the lower component index, so the result never depends on hash or sort stability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["allocate_ranks"]


def allocate_ranks(
    scores: Mapping[str, torch.Tensor | Sequence[float]],
    budget: int,
    caps: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Share ``budget`` ranks among the layers of ``scores``.

    Args:
        scores: layer name -> (k_l,) component scores, descending (e.g. explained-variance ratios).
            The mapping's order breaks ties.
        budget: the total rank to hand out (``rank * number of layers`` in EVA); >= 0.
        caps: layer name -> the most components it may take; defaults to ``k_l``.

    Returns:
        layer name -> rank, in the order of ``scores``; ranks sum to ``min(budget, sum of caps)``.
        A rank may be 0.
    """
    if budget < 0:
        raise ValueError(f"budget={budget} must be >= 0")
    candidates: list[tuple[float, int, int]] = []  # (-score, layer index, component index)
    names = list(scores)
    for layer_index, name in enumerate(names):
        values = torch.as_tensor(scores[name], dtype=torch.float64).flatten().tolist()
        cap = len(values) if caps is None else min(len(values), max(0, caps.get(name, len(values))))
        candidates.extend((-value, layer_index, i) for i, value in enumerate(values[:cap]))
    candidates.sort()
    ranks = dict.fromkeys(names, 0)
    for _, layer_index, _ in candidates[:budget]:
        ranks[names[layer_index]] += 1
    return ranks

"""EVA's rank allocation: a global, capped, deterministic share of a fixed budget.

Every layer l offers its candidate components with scores ``scores[l]`` (descending, at most its cap
long). All candidates of all layers are sorted by score; the first ``budget`` are handed out, and a
layer's rank is the number of its candidates among them. Ties go to the layer listed first, then to
the lower component index, so the result never depends on hash or sort stability.

:func:`allocate_layer_ranks` is the one place EVA's budget, caps and scores are computed, for the
convergence checks of a running fit and for the final (or reallocated) :class:`~eva_core.EvaState`;
:func:`component_scores` are the scores (``EvaConfig.redistribution``) and :func:`allocate_ranks` the
sharing itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

__all__ = ["AllocationSettings", "ExplainedVariance", "allocate_layer_ranks", "allocate_ranks", "component_scores"]


class AllocationSettings(Protocol):
    """What allocation reads of the settings (an :class:`~eva_core.EvaConfig`)."""

    @property
    def rank(self) -> int:
        """r, the average rank: the budget is ``r * L``."""

    @property
    def max_components(self) -> int:
        """The most components one layer may take, ``round(rho * r)``."""

    @property
    def redistribution(self) -> str:
        """The score components are ranked by (:func:`component_scores`)."""


class ExplainedVariance(Protocol):
    """What allocation reads of a layer's spectrum (a :class:`~eva_core.svd.Spectrum` while the fit runs,
    a :class:`~eva_core.LayerSpectrum` after it)."""

    @property
    def components(self) -> torch.Tensor:
        """(k, d_in) the components the layer holds."""

    @property
    def explained_variance(self) -> torch.Tensor:
        """(k,) variance along each component."""

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        """(k,) share of the layer's total input variance."""


def allocate_layer_ranks(
    spectra: Mapping[str, ExplainedVariance], config: AllocationSettings, layer_count: int | None = None
) -> dict[str, int]:
    """Share EVA's budget of ``config.rank * L`` ranks among the layers of ``spectra``.

    Each layer offers its components scored by ``config.redistribution``, at most ``round(rho * rank)``
    of them (``config.max_components``) and at most the ones it holds with positive variance (a direction
    without variance carries no signal, and whitening it would divide by zero); :func:`allocate_ranks`
    hands them out.

    Args:
        spectra: layer name -> its spectrum, in model order (the order breaks ties).
        config: rank, rho and redistribution.
        layer_count: L, the number of targeted layers (default ``len(spectra)``); while a fit runs, layers
            not measured yet count towards the budget too.

    Returns:
        layer name -> rank, in the order of ``spectra``.
    """
    scores = {
        name: component_scores(spectrum.explained_variance, spectrum.explained_variance_ratio, config.redistribution)
        for name, spectrum in spectra.items()
    }
    caps = {name: min(config.max_components, _with_variance(spectrum)) for name, spectrum in spectra.items()}
    budget = config.rank * (len(spectra) if layer_count is None else layer_count)
    return allocate_ranks(scores, budget=budget, caps=caps)


def _with_variance(spectrum: ExplainedVariance) -> int:
    """How many leading components of ``spectrum`` have positive (finite) variance."""
    held = spectrum.components.shape[0]
    variance = spectrum.explained_variance[:held]
    positive = (variance > 0) & torch.isfinite(variance)
    return held if bool(positive.all()) else int(positive.int().argmin())


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

"""The converged report's statistics: pure functions of numbers read from run files (numpy and scipy only).

- :func:`mean_interval`: a cell's mean over seeds with its 95 % Student-t confidence interval.
- :func:`paired_comparison`: EVA vs another method on paired seeds: the mean paired difference oriented so that
  positive means EVA is better, a paired-bootstrap percentile interval, the exact two-sided Wilcoxon
  signed-rank p and a win / tie / loss verdict from the bootstrap interval.
- :func:`steps_to_reach` and :func:`reach_target`: the first evaluated step whose mean validation value reaches
  95 % of LoRA's final mean.
- :func:`flattening`: how much a mean validation curve still moves over the last quarter of the steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "EXACT_UP_TO",
    "RESAMPLES",
    "REACH_FRACTION",
    "Comparison",
    "Flattening",
    "Summary",
    "flattening",
    "mean_interval",
    "paired_comparison",
    "reach_target",
    "steps_to_reach",
    "verdict",
    "wilcoxon_p",
]

CONFIDENCE = 0.95
RESAMPLES = 10_000
"""Bootstrap resamples of the paired differences (drawn by ``numpy.random.default_rng(BOOTSTRAP_SEED)``)."""
BOOTSTRAP_SEED = 0
EXACT_UP_TO = 6
"""Up to this many pairs the bootstrap takes every resample (6^6 = 46,656), so its interval is exact."""
REACH_FRACTION = 0.95
_TIE_DECIMALS = 12  # paired differences are rounded so that float noise (0.83-0.82 vs 0.82-0.81) keeps ties


@dataclass(frozen=True)
class Summary:
    """A cell: ``mean`` of ``n`` values and its confidence interval ``[low, high]`` (``None`` when n < 2)."""

    mean: float
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        """``high - mean`` (the t interval is symmetric), ``None`` without an interval."""
        return None if self.high is None else self.high - self.mean


@dataclass(frozen=True)
class Comparison:
    """EVA vs one method over ``n`` paired seeds.

    Attributes:
        difference: mean over seeds of (EVA - other), negated for a lower-is-better metric: positive = EVA better.
        low, high: the paired-bootstrap percentile interval of ``difference`` (equal for n = 1).
        p_value: the exact two-sided Wilcoxon signed-rank p of the differences (1.0 when all are zero).
        verdict: ``win`` / ``tie`` / ``loss`` (:func:`verdict`), ``None`` with fewer than 2 pairs.
    """

    difference: float
    low: float
    high: float
    p_value: float
    n: int
    verdict: str | None


@dataclass(frozen=True)
class Flattening:
    """The change of the validation curves over the last quarter of the steps.

    Attributes:
        start_step, end_step: the last evaluated step at or before 3/4 of the steps, and the last evaluated step.
        changes: each seed's value at ``end_step`` minus its value at ``start_step`` (the metric's unit, unsigned
            orientation): their mean (the change of the mean curve) and its 95 % Student-t interval.
        threshold: the protocol's ``flat_threshold``; ``flat``: ``|change| < threshold``.
    """

    start_step: int
    end_step: int
    changes: Summary
    threshold: float

    @property
    def change(self) -> float:
        """The mean curve's change (the mean of the seeds' changes)."""
        return self.changes.mean

    @property
    def flat(self) -> bool:
        return abs(self.change) < self.threshold


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """The mean of ``values`` (n of them) and its Student-t interval ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)``
    (``s``: the sample standard deviation); no interval for n = 1.

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("values is empty; a cell needs at least one run.")
    array = np.asarray(values, dtype=float)  # (n,)
    mean, n = float(array.mean()), len(array)
    if n < 2:
        return Summary(mean, n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * array.std(ddof=1) / math.sqrt(n))
    return Summary(mean, n, mean - half, mean + half)


def oriented_differences(eva: Sequence[float], other: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """``eva - other`` per seed (``other - eva`` when lower is better): positive where EVA is better, (n,).

    Raises:
        ValueError: the sequences differ in length or are empty (pairs are matched by seed before this).
    """
    if len(eva) != len(other) or not eva:
        raise ValueError(f"eva has {len(eva)} values and other {len(other)}; pass the same seeds, at least one.")
    sign = 1.0 if higher_is_better else -1.0
    return np.round(sign * (np.asarray(eva, dtype=float) - np.asarray(other, dtype=float)), _TIE_DECIMALS)


def bootstrap_interval(
    differences: np.ndarray, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """The percentile interval of the mean of ``differences`` (n,) over resamples of the seeds with replacement:
    quantiles of the resampled means (numpy's ``inverted_cdf``: values they take, no interpolation). Up to
    :data:`EXACT_UP_TO` pairs every one of the n^n resamples is taken (the exact bootstrap distribution: no
    randomness, the same interval on any numpy); beyond it, ``resamples`` drawn by
    ``numpy.random.default_rng(seed)``.
    With 5 pairs this interval is narrow: it ignores the uncertainty of the spread itself (a t interval would
    multiply by 2.78 where the bootstrap effectively uses about 1.96 · sqrt(4/5) = 1.75), so it excludes 0 more
    readily than a t interval would. The Wilcoxon p beside it is the conservative check.
    """
    n = len(differences)
    if n <= EXACT_UP_TO:
        indices = np.array(list(itertools.product(range(n), repeat=n)))  # (n^n, n)
    else:
        indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (resamples, n)
    means = differences[indices].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail], method="inverted_cdf")
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """The exact two-sided Wilcoxon signed-rank p of ``differences`` (n,): zeros dropped, tied magnitudes given
    their mean rank, and the null distribution enumerated over all 2^n sign flips (scipy's permutation method
    with 2^n resamples is exact). With 5 non-zero pairs the smallest possible p is 2/32 = 0.0625; 1.0 with fewer
    than two non-zero differences (both signs of one difference are equally extreme)."""
    nonzero = differences[differences != 0]  # (n',)
    if len(nonzero) < 2:
        return 1.0
    method = stats.PermutationMethod(n_resamples=2 ** len(nonzero))
    return float(stats.wilcoxon(nonzero, alternative="two-sided", method=method).pvalue)


def verdict(low: float, high: float) -> str:
    """``win`` when the interval of (EVA better by) excludes 0 on EVA's side (``low > 0``), ``loss`` when it
    excludes 0 on the other side (``high < 0``), ``tie`` when it contains 0."""
    if low > 0:
        return "win"
    if high < 0:
        return "loss"
    return "tie"


def paired_comparison(
    eva: Sequence[float], other: Sequence[float], higher_is_better: bool, resamples: int = RESAMPLES
) -> Comparison:
    """EVA's values vs another method's on the same seeds (both (n,), seed order): see :class:`Comparison`.

    The verdict comes from the bootstrap interval (:func:`bootstrap_interval`, narrow with 5 pairs); with one
    pair there is no verdict.
    """
    differences = oriented_differences(eva, other, higher_is_better)
    low, high = bootstrap_interval(differences, resamples)
    n = len(differences)
    return Comparison(
        float(differences.mean()), low, high, wilcoxon_p(differences), n, verdict(low, high) if n > 1 else None
    )


def reach_target(lora_final: float, higher_is_better: bool, fraction: float = REACH_FRACTION) -> float:
    """The value that counts as reaching ``fraction`` of LoRA's final mean validation value: ``fraction · final``
    when higher is better, ``final / fraction`` when lower is better (a loss within 1/0.95 of LoRA's)."""
    return fraction * lora_final if higher_is_better else lora_final / fraction


def steps_to_reach(steps: Sequence[int], values: Sequence[float], target: float, higher_is_better: bool) -> int | None:
    """The first of ``steps`` whose value (the mean validation curve, (E,) each) is at least ``target`` (at most,
    when lower is better); ``None`` when no evaluation reaches it."""
    for step, value in zip(steps, values, strict=True):
        if (value >= target) if higher_is_better else (value <= target):
            return int(step)
    return None


def flattening(
    steps: Sequence[int], curves: Sequence[Sequence[float]], total_steps: int, threshold: float
) -> Flattening:
    """The change of the curves ``curves`` (seeds, E) at ``steps`` (E,) from the last evaluation at or before
    3/4 of ``total_steps`` to the last evaluation (so the window covers at least the last quarter), per seed.

    Raises:
        ValueError: no evaluation at or before 3/4 of the steps, or no curve.
    """
    early = [i for i, step in enumerate(steps) if 4 * step <= 3 * total_steps]
    if not early or not curves:
        raise ValueError(f"steps={list(steps)} has no evaluation at or before 3/4 of total_steps={total_steps}.")
    start = early[-1]
    changes = mean_interval([float(curve[-1] - curve[start]) for curve in curves])
    return Flattening(int(steps[start]), int(steps[-1]), changes, threshold)

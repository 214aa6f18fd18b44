"""The converged report's statistics against hand-computed numbers: t intervals, paired differences, the
bootstrap interval (against the exact distribution of all 5^5 resamples), exact Wilcoxon p by counting sign
flips, the win / tie / loss verdicts, steps to 95 % of LoRA's final value and the flattening check."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from eva_bench.converged.statistics import (
    bootstrap_interval,
    flattening,
    mean_interval,
    oriented_differences,
    paired_comparison,
    reach_target,
    steps_to_reach,
    verdict,
    wilcoxon_p,
)

T_975_4 = 2.776445105  # Student t quantile, 0.975, 4 degrees of freedom (tables)
T_975_1 = 12.70620474


def test_mean_interval_of_five_values() -> None:
    # mean 0.82; s = sqrt((0.02² + 0.01² + 0 + 0.01² + 0.02²) / 4) = sqrt(0.00025); half = t · s / sqrt(5)
    summary = mean_interval([0.80, 0.81, 0.82, 0.83, 0.84])
    half = T_975_4 * math.sqrt(0.00025) / math.sqrt(5)
    assert summary.n == 5 and summary.mean == pytest.approx(0.82)
    assert summary.low == pytest.approx(0.82 - half) and summary.high == pytest.approx(0.82 + half)
    assert summary.half_width == pytest.approx(0.0196324, abs=1e-7)


def test_mean_interval_of_two_values_and_of_one() -> None:
    two = mean_interval([1.0, 3.0])  # s = sqrt(2), half = t · sqrt(2) / sqrt(2) = t
    assert (two.low, two.high) == (pytest.approx(2 - T_975_1), pytest.approx(2 + T_975_1))
    one = mean_interval([0.5])
    assert (one.mean, one.n, one.low, one.high, one.half_width) == (0.5, 1, None, None, None)
    with pytest.raises(ValueError, match="empty"):
        mean_interval([])


def test_differences_are_oriented_so_positive_means_eva_is_better() -> None:
    assert oriented_differences([0.9, 0.8], [0.7, 0.85], True).tolist() == pytest.approx([0.2, -0.05])
    assert oriented_differences([1.0, 2.0], [1.5, 1.0], False).tolist() == pytest.approx([0.5, -1.0])
    with pytest.raises(ValueError, match="same seeds"):
        oriented_differences([1.0], [1.0, 2.0], True)


@pytest.mark.parametrize(
    ("differences", "expected"),
    [
        ([1, 2, 3, 4, 5], 2 / 32),  # all positive: only the all-plus and all-minus flips are as extreme
        ([1, 2, 3, 4, -5], 20 / 32),  # T- = 5; subsets of {1..5} summing to <= 5: 10, times two sides
        ([0.01, 0.01, 0.02, 0.03, -0.01], 8 / 32),  # mid-ranks 2,2,2,4,5; T- = 2: {}, one of three 2s; x2
        ([0, 1, 2, 3, 4], 2 / 16),  # the zero is dropped: 4 positive pairs
        ([0, 0, 0, 0, 0], 1.0),
        ([0, 0, 0, 0, 1], 1.0),  # one non-zero pair: both of its signs are as extreme
    ],
)
def test_wilcoxon_p_is_exact(differences: list[float], expected: float) -> None:
    assert wilcoxon_p(np.asarray(differences, dtype=float)) == pytest.approx(expected)


def test_float_noise_does_not_break_tied_differences() -> None:
    # 0.83-0.82 and 0.82-0.81 differ in the last bits; rounded they tie, as the mid-rank count above assumes
    eva, other = [0.83, 0.82, 0.84, 0.86, 0.80], [0.82, 0.81, 0.82, 0.83, 0.81]
    differences = oriented_differences(eva, other, True)
    assert differences[0] == differences[1]
    assert wilcoxon_p(differences) == pytest.approx(8 / 32)


def test_bootstrap_of_two_pairs_spans_them() -> None:
    # resampled means: a (1/4), (a+b)/2 (1/2), b (1/4): the 2.5 and 97.5 percentiles are a and b
    assert bootstrap_interval(np.array([0.1, 0.3])) == (pytest.approx(0.1), pytest.approx(0.3))
    assert bootstrap_interval(np.array([0.2] * 5)) == (pytest.approx(0.2), pytest.approx(0.2))


def test_bootstrap_matches_the_exact_resampling_distribution() -> None:
    differences = np.array([0.03, -0.01, 0.02, 0.05, 0.00])
    means = np.sort([differences[list(i)].mean() for i in itertools.product(range(5), repeat=5)])  # all 3125
    low, high = bootstrap_interval(differences)
    assert low == pytest.approx(means[int(np.ceil(0.025 * 3125)) - 1], abs=1e-12)  # every resample: exact
    assert high == pytest.approx(means[int(np.ceil(0.975 * 3125)) - 1], abs=1e-12)
    many = np.linspace(-0.02, 0.05, 8)  # beyond EXACT_UP_TO: a fixed generator, the same interval every time
    assert bootstrap_interval(many) == bootstrap_interval(many) != bootstrap_interval(many, seed=1)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.001, 0.02, "win"), (-0.01, 0.02, "tie"), (0.0, 0.02, "tie"), (-0.02, 0.0, "tie"), (-0.02, -0.001, "loss")],
)
def test_verdict_from_the_interval(low: float, high: float, expected: str) -> None:
    assert verdict(low, high) == expected


def test_paired_comparison_win() -> None:
    eva = [0.82, 0.83, 0.84, 0.85, 0.86]
    other = [0.81, 0.81, 0.83, 0.82, 0.84]  # EVA better by 0.01, 0.02, 0.01, 0.03, 0.02
    result = paired_comparison(eva, other, higher_is_better=True)
    assert result.difference == pytest.approx(0.018)
    assert 0.01 <= result.low <= result.difference <= result.high <= 0.03  # within the smallest and largest
    assert result.p_value == pytest.approx(2 / 32) and result.n == 5 and result.verdict == "win"


def test_paired_comparison_tie() -> None:
    eva = [0.80, 0.80, 0.80, 0.80, 0.80]
    other = [0.78, 0.81, 0.79, 0.82, 0.795]  # EVA better by 0.02, -0.01, 0.01, -0.02, 0.005
    result = paired_comparison(eva, other, higher_is_better=True)
    assert result.difference == pytest.approx(0.001)
    assert result.low < 0 < result.high and result.verdict == "tie"
    # mid-ranks of |d|: 0.005 -> 1, 0.01 -> 2.5 (x2), 0.02 -> 4.5 (x2); T+ = 8, T- = 7. No flip gives 7.5 (that
    # needs an odd number of half ranks: 3.5, 5.5, 9.5, ...), so P(T+ <= 7) = 1/2 and p = 2 x 1/2 = 1
    assert result.p_value == pytest.approx(1.0)


def test_paired_comparison_loss_on_a_lower_is_better_metric() -> None:
    eva = [1.30, 1.25, 1.40, 1.35, 1.28]  # losses: EVA higher, so worse, by 0.1, 0.05, 0.2, 0.15, 0.08
    other = [1.20, 1.20, 1.20, 1.20, 1.20]
    result = paired_comparison(eva, other, higher_is_better=False)
    assert result.difference == pytest.approx(-0.116)
    assert -0.2 <= result.low <= result.high < 0 and result.verdict == "loss"
    assert result.p_value == pytest.approx(2 / 32)


def test_one_pair_has_no_verdict() -> None:
    result = paired_comparison([0.9], [0.8], True)
    assert (result.low, result.high, result.n, result.verdict) == (pytest.approx(0.1), pytest.approx(0.1), 1, None)


def test_reach_target_in_each_direction() -> None:
    assert reach_target(0.80, True) == pytest.approx(0.76)  # 0.95 x 0.80
    assert reach_target(1.90, False) == pytest.approx(2.00)  # 1.90 / 0.95


def test_steps_to_reach() -> None:
    steps = [0, 25, 50, 75]
    assert steps_to_reach(steps, [0.1, 0.5, 0.76, 0.8], 0.76, True) == 50  # reaching exactly counts
    assert steps_to_reach(steps, [0.1, 0.5, 0.7, 0.75], 0.76, True) is None
    assert steps_to_reach(steps, [3.0, 2.5, 2.0, 1.9], 2.0, False) == 50
    assert steps_to_reach(steps, [3.0, 2.5, 2.1, 2.01], 2.0, False) is None


def test_flattening_over_the_last_quarter() -> None:
    steps = list(range(0, 201, 25))
    values = [0.1, 0.4, 0.6, 0.7, 0.75, 0.78, 0.800, 0.803, 0.805]
    check = flattening(steps, [values], 200, 0.01)  # 3/4 of 200 = 150: 0.805 - 0.800
    assert (check.start_step, check.end_step) == (150, 200)
    assert check.change == pytest.approx(0.005) and check.flat and check.changes.low is None  # one seed
    rising = flattening(steps, [[*values[:-1], 0.82]], 200, 0.01)
    assert rising.change == pytest.approx(0.02) and not rising.flat
    falling = flattening(steps, [[*values[:-1], 0.78]], 200, 0.01)  # a drop counts as movement too
    assert falling.change == pytest.approx(-0.02) and not falling.flat


def test_flattening_of_several_seeds_is_the_mean_curves_change_with_its_interval() -> None:
    """Changes 0.01, 0.02, 0.03: mean 0.02, s = 0.01, t_(0.975, 2) = 4.303, half-width 4.303 * 0.01 / sqrt(3)."""
    curves = [[0.5, 0.80, 0.81], [0.4, 0.70, 0.72], [0.3, 0.60, 0.63]]
    check = flattening([0, 75, 100], curves, 100, 0.05)
    assert check.change == pytest.approx(
        statistics.fmean(c[-1] for c in curves) - statistics.fmean(c[1] for c in curves)
    )
    assert check.change == pytest.approx(0.02) and check.flat and check.changes.n == 3
    assert check.changes.low == pytest.approx(0.02 - 0.024843, abs=1e-5)
    assert check.changes.high == pytest.approx(0.02 + 0.024843, abs=1e-5)


def test_flattening_starts_at_the_last_evaluation_before_three_quarters() -> None:
    check = flattening([0, 30, 60, 90, 100], [[0.0, 0.5, 0.6, 0.65, 0.66]], 100, 0.05)  # 75 is not evaluated: 60
    assert (check.start_step, check.change) == (60, pytest.approx(0.06)) and not check.flat
    with pytest.raises(ValueError, match="3/4"):
        flattening([80, 100], [[0.1, 0.2]], 100, 0.05)

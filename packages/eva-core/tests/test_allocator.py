"""allocate_ranks against hand-worked tables, and the state-level allocation built on it."""

from __future__ import annotations

import pytest
import torch

from eva_core import EvaConfig, EvaState, LayerSpectrum
from eva_core.fitting.spectra import ConvergenceTracker, GroupProgress
from eva_core.ranks import allocate_layer_ranks, allocate_ranks
from eva_core.svd import Spectrum

# scores of two layers, worked by hand: sorted candidates are
#   a0 .5, b0 .4, a1 .3, b1 .2, a2 .1, b2 .05
SCORES = {"a": [0.5, 0.3, 0.1], "b": [0.4, 0.2, 0.05]}


@pytest.mark.parametrize(
    ("budget", "caps", "expected"),
    [
        (4, {"a": 2, "b": 2}, {"a": 2, "b": 2}),  # a0 b0 a1 b1
        (3, None, {"a": 2, "b": 1}),  # a0 b0 a1
        (5, None, {"a": 3, "b": 2}),  # a0 b0 a1 b1 a2
        (4, {"a": 1, "b": 3}, {"a": 1, "b": 3}),  # a's cap binds: a0 b0 b1 b2
        (4, {"a": 0, "b": 3}, {"a": 0, "b": 3}),  # a cap of 0: b takes all it may
        (0, None, {"a": 0, "b": 0}),
        (100, None, {"a": 3, "b": 3}),  # budget above all candidates: everyone at k
        (100, {"a": 2, "b": 1}, {"a": 2, "b": 1}),  # budget above all caps
        (6, {"a": 5, "b": 5}, {"a": 3, "b": 3}),  # caps above k: k binds
    ],
)
def test_hand_worked_table(budget: int, caps: dict | None, expected: dict) -> None:
    assert allocate_ranks(SCORES, budget, caps) == expected


def test_three_layers_with_caps_binding() -> None:
    scores = {
        "x": [0.9, 0.8, 0.7, 0.6],  # dominant, but capped at 2
        "y": [0.5, 0.1],
        "z": [0.45, 0.4, 0.35],
    }
    # candidates after caps: x0 .9, x1 .8, y0 .5, z0 .45, z1 .4, z2 .35, y1 .1
    assert allocate_ranks(scores, 6, {"x": 2, "y": 2, "z": 3}) == {"x": 2, "y": 1, "z": 3}
    assert allocate_ranks(scores, 4, {"x": 2, "y": 2, "z": 3}) == {"x": 2, "y": 1, "z": 1}


def test_ties_go_to_the_earlier_layer() -> None:
    scores = {"first": [0.3, 0.3], "second": [0.3, 0.3]}
    assert allocate_ranks(scores, 1) == {"first": 1, "second": 0}
    assert allocate_ranks(scores, 3) == {"first": 2, "second": 1}
    # mapping order, not name order, breaks ties
    swapped = {"second": [0.3, 0.3], "first": [0.3, 0.3]}
    assert allocate_ranks(swapped, 1) == {"second": 1, "first": 0}


def test_ties_within_a_layer_go_to_the_lower_index() -> None:
    # equal scores inside the layer; the tie with "b" at 0.2 goes to "a" (listed first)
    scores = {"a": [0.2, 0.2, 0.2], "b": [0.2]}
    assert allocate_ranks(scores, 3) == {"a": 3, "b": 0}
    assert allocate_ranks(scores, 4) == {"a": 3, "b": 1}


def test_rank_zero_and_result_order() -> None:
    scores = {"big": [10.0, 9.0], "small": [0.1], "mid": [5.0]}
    ranks = allocate_ranks(scores, 3)
    assert ranks == {"big": 2, "small": 0, "mid": 1}
    assert list(ranks) == ["big", "small", "mid"]


def test_tensor_scores_and_missing_caps() -> None:
    scores = {"a": torch.tensor([0.5, 0.3, 0.1]), "b": torch.tensor([0.4, 0.2, 0.05])}
    # "b" has no cap entry: its own length caps it
    assert allocate_ranks(scores, 5, caps={"a": 1}) == {"a": 1, "b": 3}


def test_sum_is_min_of_budget_and_caps() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = {f"l{i}": torch.rand(8, generator=generator).sort(descending=True).values for i in range(5)}
    caps = {f"l{i}": c for i, c in enumerate([0, 1, 3, 8, 8])}
    for budget in (0, 1, 7, 12, 19, 20, 40):
        ranks = allocate_ranks(scores, budget, caps)
        assert sum(ranks.values()) == min(budget, 20)
        assert all(ranks[name] <= caps[name] for name in ranks)


def test_negative_budget_raises() -> None:
    with pytest.raises(ValueError, match="budget=-1"):
        allocate_ranks(SCORES, -1)


def spectrum(ratios: list[float], name: str) -> LayerSpectrum:
    ratio = torch.tensor(ratios)
    return LayerSpectrum(
        components=torch.eye(len(ratios), 16),
        singular_values=ratio.sqrt(),
        explained_variance=ratio * 10,
        explained_variance_ratio=ratio,
        rows=100,
        converged=True,
        converged_at=2,
        source=name,
    )


LAYERS = {
    "one": spectrum([0.6, 0.2, 0.1, 0.05, 0.02, 0.01], "one"),
    "two": spectrum([0.3, 0.25, 0.2, 0.1, 0.05, 0.04], "two"),
    "three": spectrum([0.9, 0.05, 0.02, 0.01, 0.005, 0.001], "three"),
}


def test_state_allocation_by_explained_variance_ratio() -> None:
    # rank 2, rho 1.5 -> budget 6, caps 3; candidates: three0 .9, one0 .6, two0 .3, two1 .25, one1 .2, two2 .2
    # (the tie at .2 goes to "one", listed first)
    config = EvaConfig(rank=2, rho=1.5)
    assert allocate_layer_ranks(LAYERS, config) == {"one": 2, "two": 3, "three": 1}


def test_state_allocation_uniform_gives_every_layer_exactly_rank() -> None:
    for rank in (1, 3, 6):
        config = EvaConfig(rank=rank, rho=2.0, redistribution="uniform")
        assert allocate_layer_ranks(LAYERS, config) == dict.fromkeys(LAYERS, rank)
    state = EvaState(layers=LAYERS, ranks=dict.fromkeys(LAYERS, 0), steps=2, config=EvaConfig(rank=3, rho=2.0))
    assert state.reallocate(redistribution="uniform").ranks == {"one": 3, "two": 3, "three": 3}


def test_state_allocation_capped_by_stored_components() -> None:
    short = dict(LAYERS, three=spectrum([0.9, 0.05], "three"))  # only 2 components kept
    config = EvaConfig(rank=4, rho=2.0, redistribution="uniform")
    ranks = allocate_layer_ranks(short, config)
    assert ranks["three"] == 2
    assert sum(ranks.values()) == min(4 * 3, 6 + 6 + 2)


def running(layer: LayerSpectrum) -> Spectrum:
    """The same spectrum as a convergence check holds it."""
    return Spectrum(
        components=layer.components,
        singular_values=layer.singular_values,
        explained_variance=layer.explained_variance,
        explained_variance_ratio=layer.explained_variance_ratio,
        rows=layer.rows,
    )


def tracker_with(spectra: dict[str, LayerSpectrum], config: EvaConfig, layer_count: int) -> ConvergenceTracker:
    tracker = ConvergenceTracker(config, layer_count)
    tracker.groups = {name: GroupProgress(spectrum=running(layer)) for name, layer in spectra.items()}
    return tracker


@pytest.mark.parametrize("redistribution", ["explained_variance_ratio", "explained_variance", "uniform"])
@pytest.mark.parametrize(("rank", "rho"), [(2, 1.5), (1, 3.0), (4, 1.0), (3, 2.0)])
def test_convergence_allocates_as_the_state_does(rank: int, rho: float, redistribution: str) -> None:
    """The ranks a convergence check works with are the ones the state gets from the same spectra."""
    config = EvaConfig(rank=rank, rho=rho, redistribution=redistribution)
    tracker = tracker_with(LAYERS, config, layer_count=len(LAYERS))
    state = EvaState(layers=LAYERS, ranks=dict.fromkeys(LAYERS, 0), steps=2, config=config).reallocate()
    assert tracker.group_ranks({name: [name] for name in LAYERS}) == state.ranks


def test_convergence_counts_layers_not_measured_yet_and_shared_inputs() -> None:
    """Unmeasured layers still count towards the budget; a group needs the largest rank of its members."""
    config = EvaConfig(rank=2, rho=3.0)
    measured = {"one": LAYERS["one"], "three": LAYERS["three"]}
    tracker = tracker_with(measured, config, layer_count=4)
    members = {"one": ["one", "one_shared"], "three": ["three"]}
    per_layer = {"one": measured["one"], "one_shared": measured["one"], "three": measured["three"]}
    expected = allocate_layer_ranks(per_layer, config, layer_count=4)  # budget 2 * 4 over three layers
    assert sum(expected.values()) == 8
    assert tracker.group_ranks(members) == {
        "one": max(expected["one"], expected["one_shared"]),
        "three": expected["three"],
    }

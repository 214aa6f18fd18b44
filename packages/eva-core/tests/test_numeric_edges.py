"""Inputs at the edges of float arithmetic: no variance, rank-deficient, around 1e18 and 1e-18, NaN or
infinity anywhere. Each fit is checked against the exact SVD (float64 ``torch.linalg.svd`` of all rows)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eva_core import fit
from eva_core.errors import EvaWarning, NonFiniteActivationError, NoVarianceError
from eva_core.ranks import allocate_ranks
from eva_core.svd import GramStatistics

SETTINGS = {"tau": 0.0, "min_steps": 3, "max_steps": 3, "progress": False}


class Parallel(nn.Module):
    """One linear layer per positional input: ``forward(x_a, x_b, ...)`` feeds ``x_i`` to layer ``i``."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, 2) for dim in dims])

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return sum(layer(x).sum() for layer, x in zip(self.layers, inputs, strict=True))


def exact(rows: torch.Tensor, centered: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(explained-variance ratios, components) of all rows (N, d), float64."""
    x = rows.double()
    if centered:
        x = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return s**2 / (s**2).sum(), vh


def spread_rows(n: int, dim: int, seed: int, rank: int | None = None) -> torch.Tensor:
    """(n, dim) float32 rows with well separated std (3, 1.5, 0.75...) in a random basis, offset by 2; only
    ``rank`` directions vary when given (a rank-deficient input, as after a bottleneck)."""
    generator = torch.Generator().manual_seed(seed)
    rank = dim if rank is None else rank
    latent = torch.randn(n, rank, generator=generator, dtype=torch.float64) * 3 * 0.5 ** torch.arange(rank)
    basis, _ = torch.linalg.qr(torch.randn(dim, rank, generator=generator, dtype=torch.float64))  # (d, r)
    return (latent @ basis.T + 2.0).float()


def batches_of(*inputs: torch.Tensor, count: int = 3) -> list[tuple[torch.Tensor, ...]]:
    return list(zip(*(x.chunk(count) for x in inputs), strict=True))


def test_whitening_never_divides_by_a_dead_direction() -> None:
    """Rank-3 rows in 8 dimensions: whitening used to turn the 5 dead directions into A rows with entries
    of 1e3 and more. Now only the 3 directions with variance get rank, each scaled by its own std."""
    rows = spread_rows(300, 8, seed=0, rank=3)
    state = fit(Parallel([8]), batches_of(rows), rank=6, rho=1, whiten=True, **SETTINGS)
    assert state.ranks == {"layers.0": 3}
    ratios, _ = exact(rows)
    smallest_std = (ratios[2] * (rows.double() - rows.double().mean(0)).pow(2).sum() / 299).sqrt()
    whitened = state.components("layers.0")  # (3, 8)
    assert whitened.shape == (3, 8)
    assert whitened.abs().max().item() <= 1.001 / smallest_std.item()


@pytest.mark.parametrize("flat", ["constant", "zeros"])
def test_layers_without_variance_get_no_rank_and_are_named_once(flat: str) -> None:
    """Two layers with signal and one whose input never varies: the flat one used to take its share of
    the budget on arbitrary directions, silently."""
    a, b = spread_rows(300, 8, seed=1), spread_rows(300, 8, seed=2)
    c = torch.full((300, 8), 3.7) if flat == "constant" else torch.zeros(300, 8)
    with pytest.warns(EvaWarning, match=r"1 layer\(s\) have no variance.*layers\.2") as caught:
        state = fit(Parallel([8, 8, 8]), batches_of(a, b, c), rank=2, rho=1, **SETTINGS)
    assert len([w for w in caught if "no variance" in str(w.message)]) == 1
    assert state.ranks == {"layers.0": 2, "layers.1": 2, "layers.2": 0}
    assert state.layers["layers.2"].components.shape == (0, 8)


def test_zero_variance_components_get_no_rank_even_when_budget_is_left() -> None:
    """Rank-1 and rank-2 inputs, a budget of 4: the fourth rank used to go to a direction without variance.
    Now it stays unspent (no layer with signal can take it under its cap)."""
    a, b = spread_rows(300, 8, seed=3, rank=1), spread_rows(300, 8, seed=4, rank=2)
    state = fit(Parallel([8, 8]), batches_of(a, b), rank=2, rho=2, **SETTINGS)
    assert state.ranks == {"layers.0": 1, "layers.1": 2}


def test_uncentered_all_zero_input_gets_no_rank() -> None:
    a = spread_rows(300, 8, seed=5)
    with pytest.warns(EvaWarning, match=r"no variance \(zero rows\).*layers\.1"):
        state = fit(Parallel([8, 8]), batches_of(a, torch.zeros(300, 8)), rank=2, rho=1, centered=False, **SETTINGS)
    assert state.ranks == {"layers.0": 2, "layers.1": 0}


def test_no_layer_with_variance_is_a_clear_error() -> None:
    with pytest.raises(NoVarianceError, match=r"no targeted layer's input varies.*layers\.0, layers\.1"):
        fit(Parallel([8, 8]), batches_of(torch.full((300, 8), -2.5), torch.ones(300, 8)), rank=2, **SETTINGS)


@pytest.mark.parametrize("scale", [1e18, 1e-18])
@pytest.mark.parametrize("sketch", [False, True])
def test_huge_and_tiny_inputs_match_the_exact_svd(scale: float, sketch: bool) -> None:
    """Rows scaled by 1e18 used to overflow the float32 trace (every ratio 0, rank 0 everywhere). Ratios,
    ranks and components must be those of the exact SVD, as for unscaled rows."""
    a, b = spread_rows(300, 8, seed=6), spread_rows(300, 6, seed=7, rank=4) * 0.5
    memory = {"gram_memory_bytes": 0} if sketch else {}
    state = fit(Parallel([8, 6]), batches_of(a * scale, b * scale), rank=3, rho=2, **memory, **SETTINGS)
    reference = fit(Parallel([8, 6]), batches_of(a, b), rank=3, rho=2, **memory, **SETTINGS)
    truth = {"layers.0": exact(a * scale), "layers.1": exact(b * scale)}
    caps = {name: min(6, int((ratios > 1e-5).sum())) for name, (ratios, _) in truth.items()}
    expected = allocate_ranks({name: ratios[: caps[name]] for name, (ratios, _) in truth.items()}, 6, caps)
    assert state.ranks == reference.ranks == expected
    for name, (ratios, vh) in truth.items():
        layer, held = state.layers[name], caps[name]
        assert layer.components.shape[0] == held
        torch.testing.assert_close(layer.explained_variance_ratio.double(), ratios[:held], rtol=1e-4, atol=1e-7)
        cosine = (layer.components.double() * vh[:held]).sum(dim=1).abs()
        assert cosine.min().item() >= 0.9999, (name, cosine)
        assert torch.isfinite(layer.explained_variance).all() and (layer.explained_variance > 0).all()


@pytest.mark.parametrize("sketch", [False, True])
@pytest.mark.parametrize("where", ["diagonal", "off-diagonal"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_anywhere_is_reported_with_the_layer(where: str, bad: float, sketch: bool) -> None:
    """A NaN or inf in any entry of any kept row is reported naming the layer (found by the property hunt:
    the streaming sketch's SVD used to fail on it with a raw torch LinAlgError)."""
    a = spread_rows(300, 8, seed=8)
    b = spread_rows(300, 8, seed=9)
    b[150, 3 if where == "diagonal" else 5] = bad
    if where == "off-diagonal":
        b[150, 6] = -bad
    with pytest.raises(NonFiniteActivationError, match=r"layer 'layers\.1'"):
        fit(Parallel([8, 8]), batches_of(a, b), rank=2, gram_memory_bytes=0 if sketch else 2**30, **SETTINGS)


def test_overflowing_products_of_finite_inputs_stay_finite() -> None:
    """Entries of 1e20 square to 1e40, past float32's range: the statistics must still be finite."""
    a = spread_rows(300, 8, seed=10) * 1e20
    state = fit(Parallel([8]), batches_of(a), rank=2, **SETTINGS)
    ratios, _ = exact(a)
    ratio = state.layers["layers.0"].explained_variance_ratio.double()
    torch.testing.assert_close(ratio, ratios[:4], rtol=1e-4, atol=0)


@pytest.mark.parametrize("drop_masked", [True, False])
def test_padding_may_hold_nan_on_either_masking_path(drop_masked: bool) -> None:
    """Masked rows add nothing, whatever they hold: on the accelerator path (rows zeroed, not dropped) a
    NaN in padding used to survive the multiplication by the mask (NaN * 0 = NaN) and fail the fit."""
    rows = spread_rows(300, 8, seed=11)
    keep = torch.arange(300) % 3 != 0
    padded = torch.where(keep[:, None], rows, float("nan"))
    stats = GramStatistics(8, "cpu", drop_masked=drop_masked)
    for chunk, mask in zip(padded.chunk(3), keep.chunk(3), strict=True):
        stats.update(chunk, mask)
    assert bool(stats.is_finite())
    ratios, vh = exact(rows[keep])
    spectrum = stats.top(4, exact=True)
    torch.testing.assert_close(spectrum.explained_variance_ratio.double(), ratios[:4], rtol=1e-4, atol=0)
    assert (spectrum.components.double() * vh[:4]).sum(dim=1).abs().min().item() >= 0.9999

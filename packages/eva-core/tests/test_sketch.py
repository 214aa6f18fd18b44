"""The streaming sketch against the exact statistics of all rows: its stated bound, its accuracy on a
decaying spectrum, merging, masks and checkpoints."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eva_core.fitting.stopping import subspace_error
from eva_core.svd.sketch import SketchStatistics, sketch_width


def decaying_rows(n: int, dim: int, seed: int, decay: float = 0.8, offset: float = 3.0) -> torch.Tensor:
    """(n, dim) rows with population variances ``decay**i`` along random orthonormal axes, around a mean
    of size ``offset``."""
    generator = torch.Generator().manual_seed(seed)
    axes = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]
    scales = decay ** (torch.arange(dim, dtype=torch.float64) / 2)
    mean = offset * torch.randn(dim, generator=generator, dtype=torch.float64)
    return (torch.randn(n, dim, generator=generator, dtype=torch.float64) * scales @ axes.T + mean).float()


def scatter(rows: torch.Tensor, centered: bool) -> torch.Tensor:
    """The exact (d_in, d_in) scatter of ``rows``, float64."""
    exact = rows.double()
    if centered:
        exact = exact - exact.mean(dim=0)
    return exact.T @ exact


def top_exact(rows: torch.Tensor, k: int, centered: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-``k`` eigenvalues (k,) and directions (k, d_in) of the scatter of ``rows``."""
    values, vectors = torch.linalg.eigh(scatter(rows, centered))
    return values.flip(0)[:k], vectors.flip(1)[:, :k].T


def fed(rows: torch.Tensor, width: int, batch: int, centered: bool = True, **options) -> SketchStatistics:
    sketch = SketchStatistics(rows.shape[1], width, "cpu", centered=centered, **options)
    for start in range(0, rows.shape[0], batch):
        sketch.update(rows[start : start + batch])
    return sketch


def test_a_sketch_that_never_folded_is_the_exact_svd() -> None:
    rows = decaying_rows(40, 24, seed=0)
    sketch = fed(rows, width=24, batch=7)  # 40 rows < 2 * 24: nothing is folded away
    spectrum = sketch.top(6)
    values, directions = top_exact(rows, 6)
    assert subspace_error(spectrum.components, directions.float()) < 1e-6
    torch.testing.assert_close(spectrum.singular_values.double().pow(2), values, rtol=1e-4, atol=0.0)
    assert float(sketch.residual) == 0.0
    assert sketch.rows_seen().item() == 40
    torch.testing.assert_close(sketch.mean, rows.double().mean(dim=0))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 160),
    dim=st.integers(2, 24),
    width=st.integers(1, 12),
    batch=st.integers(1, 50),
    centered=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_sketched_scatter_is_within_the_residual_bound(n, dim, width, batch, centered, seed) -> None:
    """0 <= A^T A - B^T B <= residual * I (within float32 rounding), and the mean, count and total
    variance are exact, whatever the batches, widths and widths of rows."""
    rows = decaying_rows(n, dim, seed=seed, decay=0.6)
    sketch = fed(rows, width=width, batch=batch, centered=centered)
    truth = scatter(rows, centered)
    held = sketch.rows().double()
    gap = torch.linalg.eigvalsh(truth - held.T @ held)  # (d_in,)
    tolerance = 1e-5 * float(truth.trace()) + 1e-9
    assert gap.min() >= -tolerance
    assert gap.max() <= float(sketch.residual) + tolerance
    torch.testing.assert_close(float(sketch.total), float(truth.trace()), rtol=1e-9, atol=1e-9)
    assert sketch.rows_seen().item() == n


def test_the_top_components_match_the_exact_svd_after_many_folds() -> None:
    """4000 rows through a 24-row sketch (80 folds): the top 8 directions of a decaying spectrum are those
    of the exact SVD, and the variances are lower bounds within 1 %."""
    rows = decaying_rows(4000, 96, seed=1, decay=0.7)
    sketch = fed(rows, width=sketch_width(8), batch=300)
    spectrum = sketch.top(8)
    values, directions = top_exact(rows, 8)
    assert subspace_error(spectrum.components, directions.float()) < 1e-3
    sketched = spectrum.singular_values.double().pow(2)
    assert (sketched <= values * (1 + 1e-5)).all()
    torch.testing.assert_close(sketched, values, rtol=1e-2, atol=0.0)
    total = float(scatter(rows, True).trace())
    torch.testing.assert_close(spectrum.explained_variance_ratio.double(), values / total, rtol=1e-2, atol=0.0)


def test_merging_sketches_gives_the_sketch_of_all_rows() -> None:
    """Sketches of two row sets, merged, hold the union's exact mean, count and total, and its top
    directions; without a fold in either the merged scatter is the union's exactly."""
    first, second = decaying_rows(30, 16, seed=2), decaying_rows(25, 16, seed=3, offset=6.0)
    union = torch.cat([first, second])
    merged = fed(first, width=40, batch=10)
    merged.merge(fed(second, width=40, batch=10))
    torch.testing.assert_close(merged.mean, union.double().mean(dim=0))
    torch.testing.assert_close(float(merged.total), float(scatter(union, True).trace()), rtol=1e-9, atol=0.0)
    held = merged.rows().double()
    torch.testing.assert_close(held.T @ held, scatter(union, True), rtol=1e-5, atol=1e-4)

    big = [decaying_rows(2000, 64, seed=seed, decay=0.7) for seed in (4, 5, 6)]
    parts = [fed(rows, width=24, batch=250) for rows in big]
    for part in parts[1:]:
        parts[0].merge(part)
    _, directions = top_exact(torch.cat(big), 8)
    assert subspace_error(parts[0].top(8).components, directions.float()) < 1e-3
    assert parts[0].rows_seen().item() == 6000


def test_masked_rows_add_nothing_whether_dropped_or_zeroed() -> None:
    """The CPU path drops masked rows, the accelerator path zeroes them on the device: both give the
    statistics of the kept rows alone, even when the masked rows hold NaN."""
    rows = decaying_rows(120, 12, seed=7)
    mask = torch.rand(120, generator=torch.Generator().manual_seed(8)) > 0.4
    noisy = torch.where(mask[:, None], rows, torch.nan)
    kept = rows[mask]
    for drop in (True, False):
        sketch = SketchStatistics(12, 40, "cpu", drop_masked=drop)
        for start in range(0, 120, 30):
            sketch.update(noisy[start : start + 30], mask[start : start + 30])
        assert bool(sketch.is_finite())
        assert sketch.rows_seen().item() == kept.shape[0]
        torch.testing.assert_close(sketch.mean, kept.double().mean(dim=0))
        held = sketch.rows().double()
        torch.testing.assert_close(held.T @ held, scatter(kept, True), rtol=1e-5, atol=1e-4)


def test_a_restored_sketch_continues_exactly_as_the_original() -> None:
    rows = decaying_rows(700, 32, seed=9)
    whole = fed(rows, width=16, batch=90)
    first = fed(rows[:450], width=16, batch=90)
    restored = SketchStatistics(32, 16, "cpu")
    restored.load_state_dict({key: value.clone() for key, value in first.state_dict().items()})
    for start in range(450, 700, 90):
        restored.update(rows[start : start + 90])
    for key, value in whole.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key


def test_a_checkpoint_of_the_earlier_sketch_loads() -> None:
    """Checkpoints written before this sketch hold ``basis`` (its rows) and an integer count."""
    rows = decaying_rows(20, 8, seed=10)
    centered = rows.double() - rows.double().mean(dim=0)
    _, sigma, vh = torch.linalg.svd(centered.float(), full_matrices=False)
    old = {
        "basis": sigma[:, None] * vh,
        "mean": rows.mean(dim=0),
        "count": torch.tensor(20, dtype=torch.int64),
        "total": centered.pow(2).sum(),
        "finite": torch.tensor(True),
    }
    sketch = SketchStatistics(8, 16, "cpu")
    sketch.load_state_dict(old)
    _, directions = top_exact(rows, 3)
    assert subspace_error(sketch.top(3).components, directions.float()) < 1e-6
    assert sketch.rows_seen().item() == 20 and float(sketch.residual) == 0.0


def test_clear_forgets_every_row() -> None:
    sketch = fed(decaying_rows(100, 8, seed=11), width=4, batch=30)
    sketch.clear()
    assert sketch.rows().shape == (0, 8)
    assert sketch.rows_seen().item() == 0 and float(sketch.total) == 0.0 and float(sketch.residual) == 0.0
    rows = decaying_rows(10, 8, seed=12)
    sketch.update(rows)
    torch.testing.assert_close(sketch.mean, rows.double().mean(dim=0))


def test_bfloat16_rows_are_accumulated_in_float32_and_float64() -> None:
    """A bf16 model's inputs give the sketch of their exact values (no bf16 arithmetic anywhere)."""
    rows = decaying_rows(300, 16, seed=13).bfloat16()
    sketch = fed(rows, width=8, batch=64)
    same = fed(rows.float(), width=8, batch=64)
    for key, value in same.state_dict().items():
        assert torch.equal(value, sketch.state_dict()[key]), key
    assert sketch.rows().dtype == torch.float32 and sketch.mean.dtype == torch.float64

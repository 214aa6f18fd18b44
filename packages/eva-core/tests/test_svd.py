"""The streaming statistics and the eigensolver against float64 torch.linalg references."""

from __future__ import annotations

import pytest
import torch

from eva_core import fit
from eva_core.svd import GramStatistics, SketchStatistics, top_eigenpairs

TOP = 4  # components compared: their std ratio is 2, so they are well separated


def reference(rows: torch.Tensor, centered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, Vh) of all rows (N, d) in float64, centered on their mean when asked."""
    x = rows.double()
    if centered:
        x = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return s, vh


def feed(stats, chunks, masks=None) -> torch.Tensor:
    """Update ``stats`` with every chunk (N_i, d); return the rows that should count, concatenated."""
    kept = []
    for i, chunk in enumerate(chunks):
        mask = None if masks is None else masks[i]
        stats.update(chunk, mask)
        kept.append(chunk if mask is None else chunk[mask])
    return torch.cat(kept)


def assert_matches(spectrum, rows: torch.Tensor, centered: bool, k: int, cos_min: float, sv_rtol: float) -> None:
    s, vh = reference(rows, centered)
    n = rows.shape[0]
    cos = (spectrum.components[:k].double() * vh[:k]).sum(dim=1).abs()  # (k,)
    assert cos.min().item() >= cos_min, cos
    torch.testing.assert_close(spectrum.singular_values[:k].double(), s[:k], rtol=sv_rtol, atol=0.0)
    torch.testing.assert_close(
        spectrum.explained_variance_ratio[:k].double(), s[:k] ** 2 / (s**2).sum(), rtol=sv_rtol, atol=0.0
    )
    denominator = n - 1 if centered else n
    torch.testing.assert_close(
        spectrum.explained_variance[:k].double(), s[:k] ** 2 / denominator, rtol=2 * sv_rtol, atol=0.0
    )
    assert spectrum.rows == n


@pytest.mark.parametrize("dim", [8, 64, 300, 1100])
@pytest.mark.parametrize("centered", [True, False])
def test_gram_matches_svd_of_all_rows(make_rows, dim: int, centered: bool) -> None:
    rows = make_rows(3 * max(dim // 2, 40), dim, seed=dim)
    chunks = list(rows.chunk(3))
    stats = GramStatistics(dim, "cpu", centered=centered)
    seen = feed(stats, chunks)
    assert_matches(stats.top(TOP, exact=True), seen, centered, TOP, cos_min=0.9999, sv_rtol=1e-4)


@pytest.mark.parametrize("dim", [64, 1100])
def test_gram_ignores_masked_rows(make_rows, dim: int) -> None:
    rows = make_rows(600, dim, seed=3)
    garbage = 1e3 * torch.randn(600, dim)  # masked rows, large enough to dominate if counted
    generator = torch.Generator().manual_seed(0)
    masks = [torch.rand(200, generator=generator) < 0.6 for _ in range(3)]
    chunks = [torch.where(m[:, None], r, g) for m, r, g in zip(masks, rows.chunk(3), garbage.chunk(3), strict=True)]
    stats = GramStatistics(dim, "cpu", centered=True)
    seen = feed(stats, chunks, masks)
    assert stats.rows_seen().item() == sum(int(m.sum()) for m in masks)
    assert_matches(stats.top(TOP, exact=True), seen, True, TOP, cos_min=0.9999, sv_rtol=1e-4)


def test_gram_first_batch_fully_masked_still_counts_later_rows(make_rows) -> None:
    rows = make_rows(300, 32, seed=4)
    masks = [torch.zeros(100, dtype=torch.bool), torch.ones(100, dtype=torch.bool), torch.ones(100, dtype=torch.bool)]
    stats = GramStatistics(32, "cpu", centered=True)
    seen = feed(stats, list(rows.chunk(3)), masks)
    assert seen.shape[0] == 200
    assert_matches(stats.top(TOP, exact=True), seen, True, TOP, cos_min=0.9999, sv_rtol=1e-4)


@pytest.mark.parametrize("dim", [64, 1100])
def test_gram_centered_with_large_mean(make_rows, dim: int) -> None:
    """A +100 offset next to unit spread: the first-batch shift keeps the centered scatter accurate."""
    rows = make_rows(900, dim, seed=5, offset=100.0)
    stats = GramStatistics(dim, "cpu", centered=True)
    seen = feed(stats, list(rows.chunk(4)))
    assert_matches(stats.top(TOP, exact=True), seen, True, TOP, cos_min=0.9999, sv_rtol=1e-4)


def test_gram_uncentered_with_large_mean_top_component(make_rows) -> None:
    """Uncentered, the mean direction dominates; float32 resolves it (the rest is below float noise)."""
    rows = make_rows(600, 64, seed=6, offset=100.0)
    stats = GramStatistics(64, "cpu", centered=False)
    seen = feed(stats, list(rows.chunk(3)))
    assert_matches(stats.top(1, exact=True), seen, False, 1, cos_min=0.9999, sv_rtol=1e-4)


def test_gram_warm_started_solves_stay_exact(make_rows) -> None:
    """top() after each batch warm-starts from the previous basis; every answer matches the reference."""
    rows = make_rows(1200, 300, seed=7)
    stats = GramStatistics(300, "cpu", centered=True)
    seen = []
    for chunk in rows.chunk(4):
        stats.update(chunk)
        seen.append(chunk)
        assert_matches(stats.top(TOP, exact=True), torch.cat(seen), True, TOP, cos_min=0.9999, sv_rtol=1e-4)
    assert stats._basis is not None  # the iterative (warm-startable) path answered


def test_gram_components_are_oriented_and_orthonormal(make_rows) -> None:
    stats = GramStatistics(64, "cpu")
    stats.update(make_rows(400, 64, seed=8))
    components = stats.top(6, exact=True).components  # (6, 64)
    torch.testing.assert_close(components @ components.T, torch.eye(6), atol=1e-5, rtol=0)
    largest = components.gather(1, components.abs().argmax(dim=1, keepdim=True))
    assert (largest > 0).all()


@pytest.mark.parametrize("dim", [8, 64, 300])
@pytest.mark.parametrize("centered", [True, False])
def test_sketch_matches_exact_for_decaying_spectrum(make_rows, dim: int, centered: bool) -> None:
    rows = make_rows(600, dim, seed=10 + dim, offset=3.0 if centered else 0.0, decay=0.3, floor=1e-4)
    generator = torch.Generator().manual_seed(1)
    masks = [torch.rand(150, generator=generator) < 0.8 for _ in range(4)]
    stats = SketchStatistics(dim, 2 * TOP + 8, "cpu", centered=centered)
    seen = feed(stats, list(rows.chunk(4)), masks)
    assert stats.rows_seen().item() == seen.shape[0]
    assert_matches(stats.top(TOP), seen, centered, TOP, cos_min=0.999, sv_rtol=1e-3)


def test_sketch_ignores_masked_rows(make_rows) -> None:
    rows = make_rows(400, 32, seed=11, decay=0.3, floor=1e-4)
    masks = [torch.arange(200) % 2 == 0, torch.arange(200) % 3 == 0]
    chunks = [torch.where(m[:, None], r, 1e3) for m, r in zip(masks, rows.chunk(2), strict=True)]
    stats = SketchStatistics(32, 16, "cpu", centered=True)
    seen = feed(stats, chunks, masks)
    assert_matches(stats.top(TOP), seen, True, TOP, cos_min=0.999, sv_rtol=1e-3)


def test_fit_with_sketches_agrees_with_exact_fit(model, batches, exact_fit_settings) -> None:
    """gram_memory_bytes=0 measures every layer with a sketch (24 wide: narrower than the 32-wide input of
    the down projections); on these decaying spectra it finds the exact fit's components and ranks."""
    exact = fit(model, batches, **exact_fit_settings)
    sketched = fit(model, batches, gram_memory_bytes=0, **exact_fit_settings)
    assert sketched.ranks == exact.ranks
    for name, layer in exact.layers.items():
        other = sketched.layers[name]
        assert other.rows == layer.rows
        cos = (other.components[:TOP] * layer.components[:TOP]).sum(dim=1).abs()
        assert cos.min().item() >= 0.999, (name, cos)
        torch.testing.assert_close(other.singular_values[:TOP], layer.singular_values[:TOP], rtol=1e-3, atol=0)


def spd(dim: int, seed: int, decay: float = 0.7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (d, d) float64 SPD matrix with eigenvalues decay**i, and its eigh reference (descending)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    values = decay ** torch.arange(dim, dtype=torch.float64)
    matrix = (q * values) @ q.T
    ref_values, ref_vectors = torch.linalg.eigh(matrix)
    return matrix, ref_values.flip(0), ref_vectors.flip(1)


def assert_eigenpairs(values, vectors, ref_values, ref_vectors, k: int) -> None:
    torch.testing.assert_close(values, ref_values[:k], rtol=1e-6, atol=0.0)
    cos = (vectors * ref_vectors[:, :k]).sum(dim=0).abs()  # (k,)
    assert cos.min().item() >= 0.9999, cos
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(k, dtype=vectors.dtype), atol=1e-8, rtol=0)


@pytest.mark.parametrize("dim", [40, 400])
def test_top_eigenpairs_cold_start(dim: int) -> None:
    matrix, ref_values, ref_vectors = spd(dim, seed=dim)
    values, vectors, basis = top_eigenpairs(matrix, 5, generator=torch.Generator().manual_seed(0))
    assert_eigenpairs(values, vectors, ref_values, ref_vectors, 5)
    assert (basis is None) == (dim <= 256)  # small matrices go straight to eigh


def test_top_eigenpairs_warm_start_converges_in_one_iteration() -> None:
    matrix, ref_values, ref_vectors = spd(400, seed=1)
    _, _, basis = top_eigenpairs(matrix, 5)
    assert basis is not None
    # the Ritz basis of the same matrix is already converged: one iteration suffices (no eigh fallback)
    values, vectors, again = top_eigenpairs(matrix, 5, start=basis, max_iter=1)
    assert again is not None
    assert_eigenpairs(values, vectors, ref_values, ref_vectors, 5)
    # a start of just the previous top vectors (fewer columns than the width) also works
    values, vectors, _ = top_eigenpairs(matrix, 5, start=ref_vectors[:, :5], max_iter=2)
    assert_eigenpairs(values, vectors, ref_values, ref_vectors, 5)


def test_top_eigenpairs_warm_start_after_perturbation() -> None:
    matrix, _, _ = spd(400, seed=2)
    _, _, basis = top_eigenpairs(matrix, 5)
    noise = 1e-3 * torch.randn(400, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    moved = matrix + noise @ noise.T
    ref_values, ref_vectors = torch.linalg.eigh(moved)
    values, vectors, _ = top_eigenpairs(moved, 5, start=basis)
    assert_eigenpairs(values, vectors, ref_values.flip(0), ref_vectors.flip(1), 5)


def test_top_eigenpairs_rejects_k_above_size() -> None:
    with pytest.raises(ValueError, match="k=5 exceeds the matrix size d=4"):
        top_eigenpairs(torch.eye(4), 5)


@pytest.mark.parametrize("drop_masked", [True, False])
@pytest.mark.parametrize("dim", [40, 1100])
def test_gram_both_masking_paths_match_exact(drop_masked: bool, dim: int) -> None:
    """Dropping masked rows (the CPU path) and zeroing them (the accelerator path, no host sync) give
    the exact SVD of the unmasked rows, also when the first batch is fully masked."""
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(1200, dim, generator=generator) * torch.logspace(1, -2, dim) + 50.0
    mask = torch.rand(1200, generator=generator) > 0.4
    mask[:300] = False
    stats = GramStatistics(dim, "cpu", drop_masked=drop_masked)
    for chunk, keep in zip(rows.split(300), mask.split(300), strict=True):
        stats.update(chunk, keep)
    kept = rows[mask].double()
    _, singular_values, vh = torch.linalg.svd(kept - kept.mean(dim=0), full_matrices=False)
    spectrum = stats.top(6, exact=True)
    assert spectrum.rows == int(mask.sum())
    torch.testing.assert_close(spectrum.singular_values.double(), singular_values[:6], rtol=1e-4, atol=0)
    assert (spectrum.components.double() * vh[:6]).sum(dim=1).abs().min() >= 0.9999

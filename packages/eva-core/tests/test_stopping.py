"""The subspace-error stopping rule against references: principal angles from an SVD, and the known
population covariance of synthetic Gaussian inputs (the error the rule estimates, computed exactly)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import eva_core
from eva_core.errors import NotConvergedWarning
from eva_core.fitting.stopping import SAFETY, StopRecord, SubspaceErrorRule, subspace_error
from eva_core.svd import Spectrum

WIDTH, LAYERS = 24, 12


def _orthonormal(k: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """(k, d) orthonormal rows."""
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q.T


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), extra=st.integers(0, 6), seed=st.integers(0, 2**31 - 1))
def test_subspace_error_is_the_mean_squared_sine_of_the_principal_angles(k: int, extra: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    first, second = _orthonormal(k, k + extra + 1, generator), _orthonormal(k, k + extra + 1, generator)
    cosines = torch.linalg.svdvals(first @ second.T)  # cosines of the principal angles
    expected = float((1 - cosines.clamp(max=1) ** 2).mean())
    assert subspace_error(first, second) == pytest.approx(expected, abs=1e-12)
    assert subspace_error(second, first) == pytest.approx(expected, abs=1e-12)
    rotation = _orthonormal(k, k, generator)  # a rotation within the subspace changes nothing
    assert subspace_error(rotation @ first, first) == pytest.approx(0.0, abs=1e-12)


def test_subspace_error_bounds() -> None:
    eye = torch.eye(4)
    assert subspace_error(eye[:2], eye[:2]) == 0.0
    assert subspace_error(eye[:2], eye[2:]) == 1.0
    assert subspace_error(eye[:2], eye[1:3]) == pytest.approx(0.5)


class _Slices(nn.Module):
    """LAYERS linear layers, layer i reading columns [i*WIDTH, (i+1)*WIDTH) of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(WIDTH, 3) for _ in range(LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [layer(x[:, i * WIDTH : (i + 1) * WIDTH]) for i, layer in enumerate(self.layers)]
        return torch.cat(parts, dim=1)


def _population(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: (WIDTH, WIDTH) mixing M with x = z M (z standard normal) and the population eigenvectors
    (WIDTH, WIDTH) of M^T M, largest first; spectra decay at different rates, with gaps that vary."""
    generator = torch.Generator().manual_seed(seed)
    mixes, vectors = [], []
    for i in range(LAYERS):
        decay = 0.5 + 1.5 * i / (LAYERS - 1)
        scale = torch.arange(1, WIDTH + 1, dtype=torch.float64) ** (-decay / 2)  # std of each direction
        basis = _orthonormal(WIDTH, WIDTH, generator)  # rows: the directions
        mixes.append(scale[:, None] * basis)  # (WIDTH, WIDTH)
        vectors.append(basis)
    return mixes, vectors


def _batches(mixes: list[torch.Tensor], count: int, rows: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    mix = torch.block_diag(*mixes)  # (LAYERS * WIDTH, LAYERS * WIDTH)
    draws = (torch.randn(rows, mix.shape[0], generator=generator, dtype=torch.float64) for _ in range(count))
    return [(z @ mix).float() for z in draws]  # (rows, LAYERS * WIDTH) each


def _true_errors(state: eva_core.EvaState, vectors: list[torch.Tensor], k: int) -> list[float]:
    return [subspace_error(state.layers[f"layers.{i}"].components[:k], vectors[i][:k]) for i in range(LAYERS)]


def _fit(batches: list[torch.Tensor], **overrides: object) -> eva_core.EvaState:
    settings = {"rank": 4, "rho": 1.0, "tau": None, "progress": False, "domain": "generic", **overrides}
    return eva_core.fit(_Slices(), batches, **settings)


@pytest.mark.parametrize("count", [4, 16])
def test_the_estimate_tracks_the_true_error(count: int) -> None:
    """Averaged over layers and seeds, the estimate is within a factor 1.6 of the error against the
    population subspace (each one alone scatters like a sum of a few squared normals)."""
    estimated, true = [], []
    for seed in range(4):
        mixes, vectors = _population(seed)
        batches = _batches(mixes, count, rows=64, seed=seed)
        with pytest.warns(NotConvergedWarning, match=r"raise target_error \(now 1e-09\)"):  # every batch read
            state = _fit(batches, target_error=1e-9, max_steps=count)
        estimates = state.extra["estimated_error"]
        estimated += [estimates[f"layers.{i}"] for i in range(LAYERS)]
        true += _true_errors(state, vectors, 4)
    ratio = sum(true) / sum(estimated)
    assert 1 / 1.6 <= ratio <= 1.6, (ratio, sum(true) / len(true))


@pytest.mark.parametrize("target", [0.3, 0.1])
def test_layers_stop_within_the_target(target: float) -> None:
    """At least 90 % of the layers (here: 11 of 12 per seed, 43 of 48 in all) end with a true error below
    the target, every layer stops before the data runs out, and the rule is not wastefully cautious: the
    mean true error is above a tenth of the target."""
    below, errors, steps = 0, [], []
    for seed in range(4):
        mixes, vectors = _population(seed)
        state = _fit(_batches(mixes, 200, rows=64, seed=seed), target_error=target, max_steps=200)
        assert not state.not_converged
        found = _true_errors(state, vectors, 4)
        below += sum(error < target for error in found)
        errors += found
        steps.append(state.steps)
    assert below >= math.ceil(0.9 * len(errors)), (below, errors)
    assert sum(errors) / len(errors) > target / 10, errors
    assert max(steps) < 200


def _spectrum(components: torch.Tensor, rows: int) -> Spectrum:
    k = components.shape[0]
    values = torch.linspace(2.0, 1.0, k, dtype=torch.float64)
    return Spectrum(components, values.sqrt(), values, values / values.sum(), rows)


def test_no_estimate_without_an_earlier_snapshot_in_the_window() -> None:
    rule, record = SubspaceErrorRule(0.3), StopRecord()
    eye = torch.eye(6)
    first = _spectrum(eye[:3], rows=100)
    rule.observe(record, first)
    assert not rule.stopped(record, first, need=2) and record.estimate is None
    same = _spectrum(eye[:3], rows=130)  # 100 rows is more than two thirds of 130: outside the window
    rule.observe(record, same)
    assert not rule.stopped(record, same, need=2) and record.estimate is None
    later = _spectrum(eye[:3], rows=200)  # 100 of 200 rows: an estimate, 0 for an unchanged subspace
    rule.observe(record, later)
    assert rule.stopped(record, later, need=2) and record.estimate == 0.0
    wider = _spectrum(eye[:4], rows=210)  # need 4, but the snapshots hold 3 components: no estimate
    assert not rule.stopped(record, wider, need=4) and record.estimate is None


def test_the_estimate_scales_by_the_rows_and_needs_safety() -> None:
    """d(U_a, U_b) * a / (b - a), and a layer stops only when SAFETY times it is within the target."""
    eye = torch.eye(4)
    tilt = torch.stack([eye[0], (eye[1] + 0.1 * eye[2]) / math.hypot(1, 0.1)])  # one angle of ~5.7 degrees
    distance = subspace_error(eye[:2], tilt)
    for rows_then, rows_now in [(100, 200), (100, 400), (150, 250)]:
        record = StopRecord()
        rule = SubspaceErrorRule(SAFETY * distance * rows_then / (rows_now - rows_then) * 1.01)
        rule.observe(record, _spectrum(eye[:2], rows_then))
        now = _spectrum(tilt, rows_now)
        rule.observe(record, now)
        assert rule.stopped(record, now, need=2)
        assert record.estimate == pytest.approx(distance * rows_then / (rows_now - rows_then))
        assert not SubspaceErrorRule(rule.target / 1.02).stopped(record, now, need=2)


def test_snapshots_thin_out_geometrically() -> None:
    """A snapshot is kept once the rows grew by sqrt(2), and those under a fifth of the rows are dropped:
    a handful per layer however long the fit."""
    rule, record = SubspaceErrorRule(0.3), StopRecord()
    for step in range(1, 2001):
        rule.observe(record, _spectrum(torch.eye(3), rows=10 * step))
    rows = [snapshot.rows for snapshot in record.snapshots]
    assert all(later >= 2**0.5 * earlier for earlier, later in itertools.pairwise(rows))
    assert min(rows) >= 0.2 * 20000 and len(rows) <= 6


def test_a_layer_without_variance_stops() -> None:
    rule, record = SubspaceErrorRule(0.3), StopRecord()
    empty = _spectrum(torch.zeros(0, 5), rows=50)
    assert rule.stopped(record, empty, need=3) and record.estimate == 0.0
